"""What the SDK raises: every error is a SandboxError, and those about files are also the matching OSError."""

from __future__ import annotations

import errno as errnos
import os


class SandboxError(Exception):
    """Base of every error the SDK raises."""


class SandboxNotFoundError(SandboxError, LookupError):
    """The Sandbox (or its pod) does not exist."""


class SandboxExistsError(SandboxError):
    """``create`` named a Sandbox that exists already (``get_or_create`` returns it instead)."""


class KeyConflictError(SandboxError):
    """The name derived from a key is taken by a Sandbox made for another key, or by hand."""


class AccessDeniedError(SandboxError, PermissionError):
    """The caller's Kubernetes identity lacks a permission; the message names the verb, resource and namespace."""

    def __init__(self, verb: str, resource: str, namespace: str, hint: str = "") -> None:
        self.verb, self.resource, self.namespace = verb, resource, namespace
        message = f"forbidden: the caller may not {verb} {resource} in namespace {namespace!r}"
        super().__init__(f"{message}; {hint}" if hint else message)


class SandboxNotReadyError(SandboxError):
    """The Sandbox did not become Ready; ``reason`` and ``message`` come from its Ready condition."""

    def __init__(self, name: str, phase: str | None, reason: str | None, message: str | None, why: str) -> None:
        self.name, self.phase, self.reason, self.condition_message = name, phase, reason, message
        detail = f"phase {phase or 'unknown'}, reason {reason or 'unknown'}"
        super().__init__(f"sandbox {name} {why} ({detail}): {message or 'no message'}")


class SandboxFailedError(SandboxNotReadyError):
    """The Sandbox will not become Ready without a change (phase Failed or Expired)."""


class WaitTimeoutError(SandboxNotReadyError, TimeoutError):
    """The Sandbox was not Ready within the timeout."""


class ExecError(SandboxError):
    """The exec channel failed (connection lost, protocol not spoken, the command could not be started)."""


class CommandFailedError(SandboxError):
    """``CommandResult.check()`` on a command that exited non-zero or timed out."""


class FileTooLargeError(SandboxError, ValueError):
    """A file or transfer exceeds its size limit; the message names the limit."""


class SandboxFileError(SandboxError, OSError):
    """A file operation failed inside the sandbox; ``errno`` and ``filename`` say what and where."""


class SandboxFileNotFoundError(SandboxFileError, FileNotFoundError):
    """The path does not exist in the sandbox."""


class SandboxPermissionError(SandboxFileError, PermissionError):
    """The sandbox user may not read or write the path."""


class SandboxIsADirectoryError(SandboxFileError, IsADirectoryError):
    """A file operation met a directory."""


class SandboxNotADirectoryError(SandboxFileError, NotADirectoryError):
    """A directory operation met something else."""


_BY_ERRNO: dict[int, type[SandboxFileError]] = {
    errnos.ENOENT: SandboxFileNotFoundError,
    errnos.EACCES: SandboxPermissionError,
    errnos.EPERM: SandboxPermissionError,
    errnos.EISDIR: SandboxIsADirectoryError,
    errnos.ENOTDIR: SandboxNotADirectoryError,
}
# strerror texts as the shell and its tools print them (glibc and musl/busybox agree on these).
_BY_TEXT: tuple[tuple[str, int], ...] = (
    ("No such file or directory", errnos.ENOENT),
    ("nonexistent directory", errnos.ENOENT),  # busybox's words for a missing parent
    ("Directory nonexistent", errnos.ENOENT),  # dash's
    ("Permission denied", errnos.EACCES),
    ("Operation not permitted", errnos.EPERM),
    ("Read-only file system", errnos.EROFS),
    ("Is a directory", errnos.EISDIR),
    ("Not a directory", errnos.ENOTDIR),
    ("No space left on device", errnos.ENOSPC),
    ("Disk quota exceeded", errnos.EDQUOT),
    ("File too large", errnos.EFBIG),
    ("Directory not empty", errnos.ENOTEMPTY),
    ("File exists", errnos.EEXIST),
)


def file_error(code: int, path: str, detail: str = "") -> SandboxFileError:
    """The SandboxFileError for an errno, e.g. SandboxFileNotFoundError for ENOENT."""
    text = errnos.errorcode.get(code, "error")
    message = f"{os.strerror(code)} ({text})" + (f": {detail}" if detail else "")
    return _BY_ERRNO.get(code, SandboxFileError)(code, message, path)


def errno_from_text(text: str) -> int | None:
    """The errno a shell error message reports, if it names one this module knows."""
    for phrase, code in _BY_TEXT:
        if phrase in text:
            return code
    return None
