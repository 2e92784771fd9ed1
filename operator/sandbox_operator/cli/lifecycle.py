"""Subcommands on Sandboxes themselves: create, get-or-create, list, get, suspend, resume, delete, wait.

Each takes the client and the parsed arguments and returns the exit code; errors propagate to ``main``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

from sandbox_operator.api.names import SandboxPhase
from sandbox_operator.cli import output, progress
from sandbox_operator.sdk import Sandbox, SandboxClient, SandboxNotReadyError


def _emit_sandbox(args: argparse.Namespace, sandbox: Sandbox, text: str) -> int:
    output.emit(args.output, output.sandbox_document(sandbox), text)
    return 0


def _sandbox_options(args: argparse.Namespace) -> dict[str, Any]:
    """What create and get-or-create pass to the SDK; the CLI waits itself (with its progress line)."""
    return {
        "image": args.image,
        "template": args.template,
        "ttl": args.ttl,
        "idle_timeout": args.idle_timeout,
        "cpu": args.cpu,
        "memory": args.memory,
        "env": args.env or None,
        "wait": False,
    }


async def create(client: SandboxClient, args: argparse.Namespace) -> int:
    """Create a Sandbox, wait until it is Ready (unless --no-wait), print its name."""
    sandbox = await client.create(args.name, **_sandbox_options(args))
    if args.wait:
        sandbox = await progress.wait_ready(client, sandbox, args.timeout)
    return _emit_sandbox(args, sandbox, sandbox.name)


async def get_or_create(client: SandboxClient, args: argparse.Namespace) -> int:
    """The Sandbox for --key (created with the other options if there is none); print its name."""
    deadline = time.monotonic() + args.timeout
    sandbox = await client.get_or_create(args.key, **_sandbox_options(args), timeout=args.timeout)
    if args.wait:
        # get_or_create may have waited for an old Sandbox of this key to go: the timeout covers both waits.
        sandbox = await progress.wait_ready(client, sandbox, max(deadline - time.monotonic(), 1.0))
    return _emit_sandbox(args, sandbox, sandbox.name)


async def list_sandboxes(client: SandboxClient, args: argparse.Namespace) -> int:
    """The Sandboxes of the namespace (those whose key has every --key part) as a table, or a JSON list."""
    sandboxes = sorted(await client.list(args.key or None), key=lambda sandbox: sandbox.name)
    if args.output != "json" and not sandboxes:
        print(f"No sandboxes found in namespace {client.namespace}.", file=sys.stderr)
        return 0
    output.emit(
        args.output,
        [output.sandbox_document(sandbox) for sandbox in sandboxes],
        output.sandbox_table(sandboxes, datetime.now(UTC)),
    )
    return 0


async def get(client: SandboxClient, args: argparse.Namespace) -> int:
    """One Sandbox, field by field."""
    sandbox = await client.get(args.name)
    return _emit_sandbox(args, sandbox, output.sandbox_details(sandbox, datetime.now(UTC)))


async def suspend(client: SandboxClient, args: argparse.Namespace) -> int:
    """Suspend a Sandbox: its pod goes, its workspace stays."""
    sandbox = await (await client.get(args.name)).suspend()
    return _emit_sandbox(args, sandbox, f"sandbox {sandbox.name} suspended")


async def resume(client: SandboxClient, args: argparse.Namespace) -> int:
    """Resume a Sandbox and wait until it is Ready (unless --no-wait)."""
    sandbox = await (await client.get(args.name)).resume(wait=False)
    if args.wait:
        sandbox = await progress.wait_ready(client, sandbox, args.timeout)
    return _emit_sandbox(args, sandbox, f"sandbox {sandbox.name} resumed")


async def delete(client: SandboxClient, args: argparse.Namespace) -> int:
    """Delete a Sandbox (an error if there is none, as with kubectl); with --wait, return once it is gone."""
    sandbox = await client.get(args.name)
    await sandbox.delete(wait=args.wait, timeout=args.timeout)
    output.emit(
        args.output,
        {"name": sandbox.name, "namespace": sandbox.namespace, "deleted": True},
        f"sandbox {sandbox.name} deleted",
    )
    return 0


async def wait(client: SandboxClient, args: argparse.Namespace) -> int:
    """Wait until a Sandbox is Ready: exit 0 once it is, 1 if it cannot become Ready or the timeout passes."""
    sandbox = await progress.wait_ready(client, await client.get(args.name), args.timeout)
    return _emit_sandbox(args, sandbox, f"sandbox {sandbox.name} is ready")


async def usable_sandbox(client: SandboxClient, name: str) -> Sandbox:
    """The Sandbox to run a command or copy files in: SandboxNotReadyError naming its phase unless it is Ready
    (a suspended or pending one has no pod to exec into, and "pod not found" would not say why)."""
    sandbox = await client.get(name)
    if sandbox.phase != SandboxPhase.READY:
        raise SandboxNotReadyError(sandbox.name, sandbox.phase, sandbox.reason, sandbox.message, "is not ready")
    return sandbox
