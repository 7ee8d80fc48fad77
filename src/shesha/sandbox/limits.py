"""Resource limits for one sandbox container."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shesha.bounds import Cores, MemoryMB, OutputChars, Seconds

DEFAULT_MEMORY_MB = 1024
DEFAULT_CPUS = 1.0
DEFAULT_EXEC_TIMEOUT_S = 60.0


class SandboxLimits(BaseModel):
    """What a container may use. Every container in a pool gets the same limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_mb: MemoryMB = Field(
        DEFAULT_MEMORY_MB, description="memory limit; swap is set to the same value"
    )
    cpus: Cores = Field(DEFAULT_CPUS, description="CPU quota, in cores")
    pids: int = Field(64, ge=8, description="process and thread limit")
    exec_timeout_s: Seconds = Field(
        DEFAULT_EXEC_TIMEOUT_S, description="wall time for one execution, not counting sub-calls"
    )
    max_output_chars: OutputChars = Field(
        20_000, description="stdout (and stderr) kept per execution: head and tail"
    )
    tmpfs_mb: int = Field(64, ge=1, description="size of the writable, noexec /tmp")
    open_files: int = Field(256, ge=16, description="RLIMIT_NOFILE")
    file_size_mb: int = Field(64, ge=1, description="RLIMIT_FSIZE: the largest file code may write")
    max_frame_mb: int = Field(64, ge=1, description="the largest message accepted from a container")
