"""``shell``: an interactive session with a TTY in a sandbox, as ``kubectl exec -it`` gives one.

The local terminal is put in raw mode, so every key (Ctrl-C, arrows, Tab) goes to the remote TTY, which echoes and
edits; its size follows the local window (SIGWINCH). The terminal is restored however the session ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from typing import Final

from sandbox_operator.cli import lifecycle
from sandbox_operator.cli.errors import CliError
from sandbox_operator.cli.stdin import stdin_chunks
from sandbox_operator.sdk import ExecError, SandboxClient
from sandbox_operator.sdk.wire import Channel, ExecSession

DEFAULT_COMMAND: Final = ("sh",)
DEFAULT_SIZE: Final = (80, 24)


def terminal_size(fd: int) -> tuple[int, int]:
    """The terminal's (columns, rows); 80x24 if it cannot tell (a pty nobody sized reports 0x0, and a line editor
    with no columns to draw in shows nothing)."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return DEFAULT_SIZE
    return (size.columns, size.lines) if size.columns > 0 and size.lines > 0 else DEFAULT_SIZE


async def shell(client: SandboxClient, args: argparse.Namespace) -> int:
    """Open the session, pump keys to it and its output here until it ends; its exit code is ours."""
    stdin = sys.stdin.fileno()
    if not os.isatty(stdin):
        raise CliError(
            f"shell needs a terminal on stdin; to send input to a command, use: run --stdin {args.name} -- ARGV"
        )
    sandbox = await lifecycle.usable_sandbox(client, args.name)
    session = await sandbox.open_terminal(args.command or DEFAULT_COMMAND)
    loop = asyncio.get_running_loop()
    resizes: set[asyncio.Task[None]] = set()

    def resize() -> None:
        task = loop.create_task(session.resize(*terminal_size(stdin)))
        resizes.add(task)
        task.add_done_callback(resizes.discard)

    saved = termios.tcgetattr(stdin)
    keys: asyncio.Task[None] | None = None
    try:
        tty.setraw(stdin)
        await session.resize(*terminal_size(stdin))
        loop.add_signal_handler(signal.SIGWINCH, resize)
        keys = asyncio.create_task(_send_keys(session, stdin))
        async for channel, data in session.frames():
            if channel is Channel.STDOUT:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        for task in (keys, *resizes):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(task for task in (keys, *resizes) if task is not None), return_exceptions=True)
        await session.close()
    if session.status is None:
        raise ExecError("the session ended without an exit status (connection lost?)")
    return session.status.code


async def _send_keys(session: ExecSession, fd: int) -> None:
    async with contextlib.aclosing(stdin_chunks(fd)) as chunks:
        async for chunk in chunks:
            await session.write(chunk)
    await session.close_stdin()
