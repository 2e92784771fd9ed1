"""Commands in a sandbox: run to completion with a timeout and output caps, or start in the background.

Every command runs under shell.RUN: in a process group of its own that a watchdog inside the sandbox kills at the
timeout, so nothing keeps running after it, whatever the client does. Output beyond the cap is read and dropped:
client memory stays bounded by the caps whatever the command prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as errnos
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from sandbox_operator.sdk import shell
from sandbox_operator.sdk.errors import CommandFailedError, ExecError, SandboxError, file_error
from sandbox_operator.sdk.wire import Channel, ExecSession

DEFAULT_TIMEOUT: Final = 60.0
DEFAULT_MAX_OUTPUT_BYTES: Final = 1024 * 1024
KILLED_EXIT: Final = 137  # 128 + SIGKILL: what the shell reports for a command the watchdog killed
# The client waits this much longer than the timeout for the watchdog's kill to show, then kills from outside.
CLIENT_GRACE: Final = 5.0
ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

OutputCallback = Callable[[bytes], Awaitable[None] | None]


@dataclass(frozen=True)
class CommandResult:
    """How a command ended and what it printed (each stream cut at the output cap)."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool
    timed_out: bool
    duration: float

    @property
    def ok(self) -> bool:
        """Exited 0 in time."""
        return self.exit_code == 0 and not self.timed_out

    @property
    def text(self) -> str:
        """Stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def error_text(self) -> str:
        """Stderr decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (output decoded as UTF-8): what the CLI's -o json and the MCP tool return."""
        return {
            "exit_code": self.exit_code,
            "stdout": self.text,
            "stderr": self.error_text,
            "truncated": self.truncated,
            "timed_out": self.timed_out,
            "duration_seconds": round(self.duration, 3),
        }

    def check(self) -> CommandResult:
        """Self if the command succeeded, else CommandFailedError with its exit code and the end of stderr."""
        if self.timed_out:
            raise CommandFailedError(f"command timed out after {self.duration:.1f}s")
        if self.exit_code != 0:
            raise CommandFailedError(f"command exited {self.exit_code}: {self.error_text[-500:]}")
        return self


def command_argv(command: str | Sequence[str], *, shell_command: bool) -> list[str]:
    """The argv to run: a list as it is (no shell sees it); a string only with ``shell=True``, through ``sh -c``."""
    if isinstance(command, str):
        if "\x00" in command:
            raise ValueError("a command string cannot contain NUL characters")
        if not shell_command:
            raise TypeError(
                "a command string is run by a shell only when asked: pass shell=True, or an argv list "
                f"such as {command.split()[:3]!r}"
            )
        return ["sh", "-c", command]
    argv = list(command)
    if shell_command:
        raise TypeError("shell=True takes one command string, not an argv list")
    if not argv or not all(isinstance(arg, str) for arg in argv):
        raise TypeError("command must be a non-empty list of strings")
    if any("\x00" in arg for arg in argv):
        raise ValueError("command arguments cannot contain NUL characters")
    return argv


def wrapped_argv(
    argv: Sequence[str], timeout: float | None, cwd: str | None, env: Mapping[str, str] | None
) -> list[str]:
    """shell.RUN's argv around the command: timeout (whole seconds, rounded up; 0 is none), cwd, environment, then
    ``--`` and the command."""
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be positive seconds or None, not {timeout!r}")
    pairs = []
    for name, value in (env or {}).items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ValueError(f"env name {name!r} must match {ENV_NAME.pattern}")
        if not isinstance(value, str) or "\x00" in value:
            raise ValueError(f"env[{name!r}] must be a string without NUL characters")
        pairs.append(f"{name}={value}")
    if cwd is not None and (not cwd or "\x00" in cwd):
        raise ValueError("cwd must be a non-empty path")
    return shell.argv(shell.RUN, "sandbox-run", str(watchdog_seconds(timeout)), cwd or "", *pairs, "--", *argv)


def watchdog_seconds(timeout: float | None) -> int:
    """The whole seconds the watchdog in the sandbox waits (0: no timeout): the timeout rounded up."""
    return 0 if timeout is None else max(1, int(-(-timeout // 1)))


class _Stream:
    """One output stream: kept up to the cap, passed whole to the callback."""

    def __init__(self, cap: int, callback: OutputCallback | None) -> None:
        self.data = bytearray()
        self.cap, self.callback, self.truncated = cap, callback, False

    async def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room >= len(chunk):
            self.data += chunk
        else:
            self.data += chunk[: max(room, 0)]
            self.truncated = True
        if self.callback is not None:
            outcome = self.callback(chunk)
            if inspect.isawaitable(outcome):
                await outcome


class Process:
    """A command started in a sandbox: wait for it, read what it printed so far, write to its stdin, kill it."""

    def __init__(
        self,
        session: ExecSession,
        signal: Callable[[str, int], Awaitable[None]],
        timeout: float | None,
        max_output_bytes: int,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
        cwd: str = "",
        stdin: bool = False,
    ) -> None:
        self._session, self._signal, self._timeout, self._cwd = session, signal, timeout, cwd
        self._stdin_open = stdin
        self._stdout = _Stream(max_output_bytes, on_stdout)
        self._stderr = _Stream(max_output_bytes, on_stderr)
        self._header = bytearray()  # stderr until the wrapper's first line (the pgid or an error) is complete
        self._started = time.monotonic()
        self.pgid: int | None = None
        self._setup_error: SandboxError | None = None
        self._pgid_known = asyncio.Event()
        self._pump = asyncio.create_task(self._read())

    async def _stderr_chunk(self, chunk: bytes) -> None:
        if self._pgid_known.is_set():
            await self._stderr.add(chunk)
            return
        self._header += chunk
        if b"\n" not in self._header and len(self._header) < 256:
            return
        line, _, rest = bytes(self._header).partition(b"\n")
        self._header.clear()
        if line.startswith(shell.PGID_MARKER) and line[len(shell.PGID_MARKER) :].isdigit():
            self.pgid = int(line[len(shell.PGID_MARKER) :])
        elif line.startswith(shell.ERROR_MARKER):
            self._setup_error = _setup_error(line[len(shell.ERROR_MARKER) :].decode("utf-8", "replace"), self._cwd)
        else:
            rest = line + b"\n" + rest  # not the wrapper's line (a shell without setsid?): it is output
        self._pgid_known.set()
        if rest:
            await self._stderr.add(rest)

    async def _read(self) -> None:
        try:
            async for channel, data in self._session.frames():
                if channel is Channel.STDOUT:
                    await self._stdout.add(data)
                else:
                    await self._stderr_chunk(data)
        finally:
            if not self._pgid_known.is_set() and self._header:
                await self._stderr.add(bytes(self._header))
            self._pgid_known.set()
            await self._session.close()

    async def write(self, data: bytes | str) -> None:
        """Send to the command's stdin (started with ``stdin=True``)."""
        await self._session.write(data.encode() if isinstance(data, str) else data)

    async def close_stdin(self) -> None:
        """End the command's stdin (``wait`` does it too: the sandbox reports the end only once stdin has ended)."""
        if self._stdin_open:
            self._stdin_open = False
            await self._session.close_stdin()

    def output(self) -> tuple[bytes, bytes]:
        """Stdout and stderr printed so far (up to the cap)."""
        return bytes(self._stdout.data), bytes(self._stderr.data)

    @property
    def done(self) -> bool:
        """Whether the command has ended."""
        return self._pump.done()

    async def kill(self, signal: str = "KILL") -> None:
        """Send ``signal`` (a name such as TERM or KILL) to the command's whole process group. INT and QUIT are
        ignored by it (POSIX shells start background commands so), so interrupt with TERM."""
        if not re.fullmatch(r"[A-Z0-9]{1,10}", signal):
            raise ValueError(f"signal must be a name such as TERM or KILL, not {signal!r}")
        with contextlib.suppress(TimeoutError):  # the wrapper reports it at once; a silent sandbox gets no signal
            await asyncio.wait_for(self._pgid_known.wait(), CLIENT_GRACE)
        if self.pgid is not None and not self._pump.done():
            await self._signal(signal, self.pgid)

    async def wait(self, timeout: float | None = None) -> CommandResult:
        """The result once the command ends. Closes the command's stdin first (the sandbox reports the end only
        once stdin has ended): finish writing before waiting. ``timeout`` bounds this wait only (the command's own
        timeout, given to ``start``, kills it); TimeoutError if it passes."""
        limit = None if self._timeout is None else self._timeout + CLIENT_GRACE
        if timeout is not None:
            limit = timeout if limit is None else min(limit, timeout)
        killed_from_outside = False
        if self._stdin_open and not self._pump.done():
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await self.close_stdin()
        try:
            await asyncio.wait_for(asyncio.shield(self._pump), limit)
        except TimeoutError:
            if timeout is not None and (self._timeout is None or timeout < self._timeout + CLIENT_GRACE):
                raise
            # The watchdog should have fired; the sandbox may be frozen or gone. Kill from outside and give up.
            killed_from_outside = True
            await self._kill_quietly()
            self._pump.cancel()
        if self._setup_error is not None:
            raise self._setup_error
        duration = time.monotonic() - self._started
        status = self._session.status
        if status is None and not killed_from_outside and not self._pump.cancelled():
            error = self._pump.exception()
            raise ExecError(f"the exec connection ended without an exit status ({error or 'closed'})")
        code = status.code if status is not None else KILLED_EXIT
        timed_out = killed_from_outside or (
            self._timeout is not None and code == KILLED_EXIT and duration >= watchdog_seconds(self._timeout)
        )
        return CommandResult(
            exit_code=code,
            stdout=bytes(self._stdout.data),
            stderr=bytes(self._stderr.data),
            truncated=self._stdout.truncated or self._stderr.truncated,
            timed_out=timed_out,
            duration=duration,
        )

    async def _kill_quietly(self) -> None:
        if self.pgid is None:
            return
        with contextlib.suppress(SandboxError, TimeoutError):
            await asyncio.wait_for(self._signal("KILL", self.pgid), CLIENT_GRACE)


def _setup_error(text: str, cwd: str) -> SandboxError:
    """The error a wrapper's refusal line reports (today: a working directory it could not enter)."""
    name, _, detail = text.partition(" ")
    code = getattr(errnos, name, None)
    if detail == "cwd" and isinstance(code, int):
        return file_error(code, cwd, "cannot enter the working directory")
    return ExecError(f"the command could not be started: {text}")
