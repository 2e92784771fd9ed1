"""``run``: a command in a sandbox, its output streamed here as it arrives, its exit code ours.

A timeout exits 124 (as coreutils timeout). Ctrl-C terminates the command's process group in the sandbox (SIGTERM:
commands started in the background of a shell ignore SIGINT) and kills it if it is still there a moment later. A
closed stdout (``| head``) stops the command as SIGPIPE would stop a local one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import BinaryIO, Final

import aiohttp

from sandbox_operator.cli import lifecycle, output
from sandbox_operator.cli.errors import EXIT_TIMEOUT
from sandbox_operator.cli.stdin import stdin_chunks
from sandbox_operator.sdk import CommandResult, Process, SandboxClient, SandboxError
from sandbox_operator.sdk.commands import DEFAULT_MAX_OUTPUT_BYTES

INTERRUPT_GRACE: Final = 2.0  # seconds between SIGTERM and SIGKILL after Ctrl-C
SIGNAL_TIMEOUT: Final = 5.0
STDIN_GRACE: Final = 1.0  # seconds past --timeout after which the command is gone and its stdin is closed


class OutputSink:
    """Copies one output stream of the command to a local one as it arrives, up to ``limit`` bytes (None: all).
    A local pipe closed by its reader sets ``closed`` and silences the stream."""

    def __init__(self, stream: BinaryIO, limit: int | None, closed: asyncio.Event) -> None:
        self.stream, self.limit, self.closed = stream, limit, closed
        self.written = self.dropped = 0

    def __call__(self, chunk: bytes) -> None:
        room = len(chunk) if self.limit is None else max(self.limit - self.written, 0)
        part = chunk[:room]
        self.dropped += len(chunk) - len(part)
        if not part or self.closed.is_set():
            return
        try:
            self.stream.write(part)
            self.stream.flush()
        except BrokenPipeError:
            self.closed.set()
            output.discard_further_output(self.stream)
            return
        self.written += len(part)


async def run(client: SandboxClient, args: argparse.Namespace) -> int:
    """Run the command; print its output as it comes (text) or its result as one document (json)."""
    sandbox = await lifecycle.usable_sandbox(client, args.name)
    as_json = args.output == "json"
    pipe_closed = asyncio.Event()
    sinks = (
        None
        if as_json
        else (
            OutputSink(sys.stdout.buffer, args.max_output_bytes, pipe_closed),
            OutputSink(sys.stderr.buffer, args.max_output_bytes, pipe_closed),
        )
    )
    kept = args.max_output_bytes if args.max_output_bytes is not None else DEFAULT_MAX_OUTPUT_BYTES
    process = await sandbox.start(
        args.command[0] if args.shell else args.command,
        shell=args.shell,
        timeout=args.timeout,
        cwd=args.cwd,
        env=args.env or None,
        stdin=args.stdin,
        max_output_bytes=0 if sinks else kept,  # streamed output needs no copy in memory
        on_stdout=sinks[0] if sinks else None,
        on_stderr=sinks[1] if sinks else None,
    )
    try:
        result = await _wait(process, pipe_closed, stdin=args.stdin, timeout=args.timeout)
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us, then raises KeyboardInterrupt
        await _interrupt(process)
        raise
    if as_json:
        output.emit(args.output, output.result_document(result), "")
    elif sinks and any(sink.dropped for sink in sinks):
        print(f"note: output beyond {args.max_output_bytes} bytes per stream was dropped", file=sys.stderr)
    return _exit_code(result, args.timeout)


def _exit_code(result: CommandResult, timeout: float | None) -> int:
    if result.timed_out:
        limit = f" after {timeout:g}s" if timeout is not None else ""
        print(f"error: the command timed out{limit} and was killed", file=sys.stderr)
        return EXIT_TIMEOUT
    return result.exit_code


async def _feed_stdin(process: Process) -> None:
    async with contextlib.aclosing(stdin_chunks()) as chunks:
        async for chunk in chunks:
            await process.write(chunk)


async def _wait(process: Process, pipe_closed: asyncio.Event, *, stdin: bool, timeout: float | None) -> CommandResult:
    """The command's result. With ``stdin``, ours is sent first, to its end: the sandbox reports the command's end
    only once its stdin has ended. Feeding stops early when the timeout has killed the command, or when our stdout's
    reader goes away; then the command gets SIGPIPE, as a local one would."""
    closed = asyncio.create_task(pipe_closed.wait())
    try:
        if stdin:
            feeder = asyncio.create_task(_feed_stdin(process))
            limit = timeout + STDIN_GRACE if timeout is not None else None
            try:
                await asyncio.wait({feeder, closed}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            finally:
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)  # a command gone early: its result says why
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await process.close_stdin()
        waiter = asyncio.create_task(process.wait())
        try:
            await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                await _signal(process, "PIPE")
            return await waiter
        finally:
            waiter.cancel()
    finally:
        closed.cancel()


async def _signal(process: Process, signal: str) -> None:
    """Best effort: the sandbox may be gone."""
    with contextlib.suppress(TimeoutError, SandboxError):
        await asyncio.wait_for(process.kill(signal), SIGNAL_TIMEOUT)


async def _interrupt(process: Process) -> None:
    """SIGTERM to the command's process group, SIGKILL if it is still running INTERRUPT_GRACE later."""
    with contextlib.suppress(ConnectionError, aiohttp.ClientError):
        await process.close_stdin()
    for signal, grace in (("TERM", INTERRUPT_GRACE), ("KILL", 0.0)):
        if process.done:
            return
        await _signal(process, signal)
        for _ in range(int(grace / 0.1)):
            if process.done:
                return
            await asyncio.sleep(0.1)
