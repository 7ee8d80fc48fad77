"""Control groups for the bubblewrap sandbox: a memory limit the kernel enforces (and
reports as an out-of-memory kill), a process limit and a CPU quota, where this machine
lets us make a group. cgroup v2 (a unified hierarchy with the controllers delegated to
us) or v1 (one hierarchy per controller), each group made under the one this process
is in. ``Cgroups.find()`` is None when neither is writable; the sandbox then falls back
to rlimits and says so.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Cgroups:
    """Where groups are made: one directory per controller (v1), or one for all (v2)."""

    version: int
    memory: Path
    pids: Path
    cpu: Path | None

    @classmethod
    def find(cls, root: Path = ROOT) -> Cgroups | None:
        return _v2(root) or _v1(root)

    def make(self, memory_bytes: int, pids: int, cpus: float) -> Cgroup:
        """A new group with these limits. Raises OSError when it cannot be made."""
        name = f"shesha-{os.getpid()}-{secrets.token_hex(4)}"
        dirs = list(dict.fromkeys(d / name for d in (self.memory, self.pids, self.cpu) if d))
        made: list[Path] = []
        try:
            for d in dirs:
                d.mkdir()
                made.append(d)
            group = Cgroup(self.version, tuple(dirs))
            if self.version == 2:
                _write(self.memory / name / "memory.max", str(memory_bytes))
                _write(self.memory / name / "memory.swap.max", "0", optional=True)
                _write(self.pids / name / "pids.max", str(pids))
                if self.cpu is not None:
                    quota = int(cpus * CPU_PERIOD_US)
                    _write(self.cpu / name / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                _write(self.memory / name / "memory.limit_in_bytes", str(memory_bytes))
                swap = self.memory / name / "memory.memsw.limit_in_bytes"
                _write(swap, str(memory_bytes), optional=True)
                _write(self.pids / name / "pids.max", str(pids))
                if self.cpu is not None:
                    _write(self.cpu / name / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                    _write(self.cpu / name / "cpu.cfs_quota_us", str(int(cpus * CPU_PERIOD_US)))
            return group
        except OSError:
            for d in reversed(made):
                with contextlib.suppress(OSError):  # best effort: it may hold nothing yet
                    d.rmdir()
            raise

    def describe(self) -> str:
        kinds = "memory, processes" + (", CPU" if self.cpu is not None else "")
        return f"cgroup v{self.version} ({kinds})"


@dataclass(frozen=True)
class Cgroup:
    """One sandbox's group (a directory per controller on v1)."""

    version: int
    dirs: tuple[Path, ...]

    def join(self) -> None:
        """Move the calling process in. Runs in the child between fork and exec, so it
        only writes to files."""
        pid = str(os.getpid()).encode()
        for d in self.dirs:
            fd = os.open(d / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def oom_killed(self) -> bool:
        """Whether the kernel killed something in it for using too much memory."""
        for d in self.dirs:
            events = d / ("memory.events" if self.version == 2 else "memory.oom_control")
            with contextlib.suppress(OSError):
                for line in events.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.strip() not in ("", "0"):
                        return True
        return False

    def remove(self) -> None:
        """Kill what is left in it and remove it."""
        for d in self.dirs:
            with contextlib.suppress(OSError):  # already empty, or already gone
                for pid in (d / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), 9)
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy: its last processes are still exiting
                    os.sched_yield()


def _write(path: Path, value: str, *, optional: bool = False) -> None:
    try:
        path.write_text(value)
    except OSError:
        if not optional:
            raise


def _own(controller: str | None) -> str:
    """The group this process is in, for a v1 controller (None: v2)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            if (controller is None and names == "") or controller in names.split(","):
                return path.lstrip("/")
    return ""


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def _v2(root: Path) -> Cgroups | None:
    base = root if (root / "cgroup.controllers").is_file() else root / "unified"
    if not (base / "cgroup.controllers").is_file():
        return None
    parent = base / _own(None)
    try:
        enabled = (parent / "cgroup.subtree_control").read_text().split()
    except OSError:
        return None
    if not {"memory", "pids"} <= set(enabled) or not _writable(parent):
        return None
    return Cgroups(2, parent, parent, parent if "cpu" in enabled else None)


def _v1(root: Path) -> Cgroups | None:
    memory = root / "memory" / _own("memory")
    pids = root / "pids" / _own("pids")
    cpu = root / "cpu" / _own("cpu")
    if not (_writable(memory) and _writable(pids)):
        return None
    return Cgroups(1, memory, pids, cpu if _writable(cpu) else None)
