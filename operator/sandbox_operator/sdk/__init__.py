"""The Python SDK: Sandboxes through the Kubernetes API with the caller's own credentials, commands and files over
the exec subresource. Async first (``SandboxClient``); ``sandbox_operator.sdk.sync`` wraps it for plain code.

It imports the Kopf-free ``sandbox_operator.api`` and the Kubernetes client, never the operator.
"""

from sandbox_operator.api.keys import InvalidKeyError
from sandbox_operator.sdk.client import Impersonation, InvalidSpecError, Sandbox, SandboxClient, load_configuration
from sandbox_operator.sdk.commands import CommandResult, Process
from sandbox_operator.sdk.errors import (
    AccessDeniedError,
    CommandFailedError,
    ExecError,
    FileTooLargeError,
    KeyConflictError,
    SandboxError,
    SandboxExistsError,
    SandboxFailedError,
    SandboxFileError,
    SandboxFileNotFoundError,
    SandboxIsADirectoryError,
    SandboxNotADirectoryError,
    SandboxNotFoundError,
    SandboxNotReadyError,
    SandboxPermissionError,
    WaitTimeoutError,
)
from sandbox_operator.sdk.files import FileInfo, Files

__all__ = [
    "AccessDeniedError",
    "CommandFailedError",
    "CommandResult",
    "ExecError",
    "FileInfo",
    "FileTooLargeError",
    "Files",
    "Impersonation",
    "InvalidKeyError",
    "InvalidSpecError",
    "KeyConflictError",
    "Process",
    "Sandbox",
    "SandboxClient",
    "SandboxError",
    "SandboxExistsError",
    "SandboxFailedError",
    "SandboxFileError",
    "SandboxFileNotFoundError",
    "SandboxIsADirectoryError",
    "SandboxNotADirectoryError",
    "SandboxNotFoundError",
    "SandboxNotReadyError",
    "SandboxPermissionError",
    "WaitTimeoutError",
    "load_configuration",
]
