"""Which errors the CLI reports as one ``error: ...`` line (exit 1), and how they read."""

from __future__ import annotations

from typing import Final

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from sandbox_operator.sdk import SandboxError, SandboxFileError

EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2  # argparse's own
EXIT_TIMEOUT: Final = 124  # as coreutils timeout
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE: Final = 141  # 128 + SIGPIPE


class CliError(Exception):
    """A failure the CLI detects itself, e.g. ``shell`` without a terminal."""


def one_line(text: str) -> str:
    """Several lines joined with '; ', so every error is one line on stderr."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or "unknown error"


def describe_error(error: BaseException) -> str | None:
    """The message for an error the user can act on; None for anything else (a bug, whose traceback helps).

    The SDK's errors, bad values (ValueError, InvalidKeyError) and local file errors, and what the Kubernetes
    client raises around the SDK: an unreadable kubeconfig, an unreachable API server, an unexpected answer."""
    if isinstance(error, SandboxFileError):
        return one_line(f"{error.filename} (in the sandbox): {error.strerror}")
    if isinstance(error, (CliError, SandboxError, ValueError)):
        return one_line(str(error))
    if isinstance(error, ConfigException):
        return one_line(f"kubeconfig: {error}")
    if isinstance(error, aiohttp.ClientError):
        return one_line(f"cannot reach the Kubernetes API server: {error}")
    if isinstance(error, ApiException):
        return one_line(f"the Kubernetes API server answered {error.status} {error.reason}")
    if isinstance(error, OSError):
        if error.filename is not None and error.strerror:
            return one_line(f"{error.filename}: {error.strerror}")
        return one_line(str(error))
    return None
