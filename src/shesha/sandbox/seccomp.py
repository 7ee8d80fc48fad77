"""A small seccomp filter for the bubblewrap sandbox, as a classic BPF program that
``bwrap --seccomp FD`` loads just before it starts the runner.

It is a deny list, not an allow list: Python needs a broad set of system calls, and the
namespaces already take away the network, other processes and the host's files. What
it refuses (with EPERM, so code sees an ordinary error) are the calls that attack the
kernel or escape namespaces, which Docker's default profile refuses too:

- new namespaces and joining others: ``unshare``, ``setns``; mounting: ``mount``,
  ``umount2``, ``pivot_root``, ``chroot`` and the new mount API (``fsopen``...);
- kernel and system state: modules, ``kexec_*``, ``reboot``, swap, clocks, host and
  domain names, ``acct``, ``quotactl``;
- debugging and reading other processes: ``ptrace``, ``process_vm_readv/writev``;
- large kernel attack surface: ``bpf``, ``perf_event_open``, ``userfaultfd``,
  ``io_uring_*``, the keyring (``keyctl``, ``add_key``, ``request_key``), file handles
  (``open_by_handle_at``);
- sockets of any family but AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK (which the C
  library uses to list interfaces): no packet, key, Bluetooth or VM sockets. There is no
  network to reach either way: the namespace has only loopback;
- the x32 system-call ABI, which would otherwise bypass the table above.

Only x86_64 is covered (its numbers are below); elsewhere ``program()`` returns None and
the sandbox runs without a filter, as ``isolation()`` then says.
"""

from __future__ import annotations

import errno
import platform
import struct

# struct seccomp_data: nr (u32), arch (u32), instruction_pointer (u64), args (6 x u64)
_NR, _ARCH, _ARG0 = 0, 4, 16
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
ALLOWED_FAMILIES = (1, 2, 10, 16)
"""AF_UNIX, AF_INET, AF_INET6, AF_NETLINK."""

# classic BPF opcodes
_LD_W_ABS = 0x00 | 0x00 | 0x20
_JEQ_K = 0x05 | 0x10 | 0x00
_JGE_K = 0x05 | 0x30 | 0x00
_RET_K = 0x06 | 0x00

_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000

DENIED_X86_64 = {
    "ptrace": 101,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "pivot_root": 155,
    "adjtimex": 159,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
SOCKET_X86_64 = 41


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine, or None where it has no system-call table here."""
    if (machine or platform.machine()) not in ("x86_64", "AMD64"):
        return None
    refuse = _op(_RET_K, _RET_ERRNO | errno.EPERM)
    ops = [
        _op(_LD_W_ABS, _ARCH),
        _op(_JEQ_K, _AUDIT_ARCH_X86_64, jt=1),
        _op(_RET_K, _RET_KILL_PROCESS),  # another ABI (i386): nothing of ours uses it
        _op(_LD_W_ABS, _NR),
        _op(_JGE_K, _X32_BIT, jf=1),
        refuse,
    ]
    for number in sorted(DENIED_X86_64.values()):
        ops += [_op(_JEQ_K, number, jf=1), refuse]
    families = len(ALLOWED_FAMILIES)
    ops += [
        _op(_JEQ_K, SOCKET_X86_64, jf=families + 2),
        _op(_LD_W_ABS, _ARG0),  # the family: the low 32 bits of the first argument
    ]
    for i, family in enumerate(ALLOWED_FAMILIES):
        ops.append(_op(_JEQ_K, family, jt=families - i))  # on to ALLOW
    ops += [
        _op(_RET_K, _RET_ERRNO | errno.EAFNOSUPPORT),
        _op(_RET_K, _RET_ALLOW),
    ]
    return b"".join(ops)
