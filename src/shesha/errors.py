"""shesha's exceptions: one hierarchy rooted at :class:`SheshaError`.

Every error a user can meet carries a message that says what went wrong and what
to do about it. Catch ``SheshaError`` to catch them all.
"""

from __future__ import annotations


class SheshaError(Exception):
    """The root of every error shesha raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        """What went wrong, without the hint."""
        return super().__str__()

    def __str__(self) -> str:
        base = self.message
        return f"{base}\nHint: {self.hint}" if self.hint else base


class ConfigError(SheshaError):
    """A setting is missing or invalid."""


# -- LLM ------------------------------------------------------------------------------


class LLMError(SheshaError):
    """A call to a language model failed."""


class LLMContextWindowError(LLMError):
    """The prompt did not fit the model's window. ``requested`` and ``limit`` are the
    provider's token counts, when its message gave them."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        requested: int | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.requested = requested
        self.limit = limit


class LLMAuthenticationError(LLMError):
    """The provider refused the credentials (bad or missing API key)."""


class LLMRateLimitError(LLMError):
    """The provider kept rate-limiting after every retry."""


class LLMConnectionError(LLMError):
    """The model's endpoint could not be reached, or timed out."""


# -- sandbox --------------------------------------------------------------------------


class SandboxError(SheshaError):
    """The code sandbox failed."""


class SandboxUnavailableError(SandboxError):
    """No Docker daemon answers, or no container could be started."""


class SandboxImageError(SandboxUnavailableError):
    """The sandbox image is missing, or its runner is a different version."""


class SandboxBusyError(SandboxError):
    """Every container in the pool stayed busy past the acquire timeout."""


class SandboxProtocolError(SandboxError):
    """The container sent something malformed; it has been discarded."""


# -- documents ------------------------------------------------------------------------


class StorageError(SheshaError):
    """The project store could not be read or written."""


class InvalidName(StorageError):
    """A project or document name that the store refuses (the caller's to fix)."""


class AlreadyExists(StorageError):
    """A project that is being made exists already."""


class NotFoundError(StorageError):
    """No such project, document or trace."""


class ProjectGone(NotFoundError):
    """The project was deleted while a handle to it was held (an add, a query): nothing
    more is stored in it, and no folder is left behind."""


class Forbidden(SheshaError):
    """A request for something a server may not touch (a path outside its allow-list)."""


class RepositoryError(StorageError):
    """A git repository could not be read (git missing, no such repository or commit)."""


class ParseError(SheshaError):
    """A document could not be parsed."""
