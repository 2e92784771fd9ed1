"""The command line: ``sandbox`` and, as a kubectl plugin, ``kubectl sandbox`` (the same program, installed as
``kubectl-sandbox``). Sandboxes are reached through the SDK with the caller's kubeconfig, never the operator.

Exit codes: 0 success; 1 an error (one ``error: ...`` line on stderr); 2 a usage error; ``run`` and ``shell`` exit
with the command's code, 124 when ``run`` timed out; 130 when interrupted; 141 when stdout's reader went away.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping

from sandbox_operator.cli import output
from sandbox_operator.cli.errors import EXIT_BROKEN_PIPE, EXIT_ERROR, EXIT_INTERRUPTED, CliError, describe_error
from sandbox_operator.cli.parser import parse_arguments, program_name
from sandbox_operator.sdk import SandboxClient

Handler = Callable[[SandboxClient, argparse.Namespace], Awaitable[int]]


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand (``argv`` defaults to the process's arguments) and return the exit code."""
    try:
        args = parse_arguments(sys.argv[1:] if argv is None else argv, program_name(sys.argv[0]))
    except SystemExit as exit_:  # --help, or a usage error argparse has printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    # The Kubernetes client logs what it then raises (e.g. "Config not found"): the error line says it once.
    logging.getLogger("kubernetes_asyncio").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(_execute(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # our stdout's reader went away (`| head`): end quietly, as SIGPIPE ends a local tool
        output.discard_further_output(sys.stdout)
        return EXIT_BROKEN_PIPE
    except Exception as error:
        message = describe_error(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR


def kubeconfig_problem(kubeconfig: str | None, environ: Mapping[str, str]) -> str | None:
    """Why no kubeconfig can be read, if none of its paths exists (the client's own error would blame the file's
    contents); None when one exists, or when in a pod without one (its service account is used)."""
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in environ and not environ.get("KUBECONFIG"):
        return None
    paths = kubeconfig or environ.get("KUBECONFIG") or os.path.join("~", ".kube", "config")
    if any(os.path.exists(os.path.expanduser(path)) for path in paths.split(os.pathsep) if path):
        return None
    return f"no kubeconfig at {paths}: pass --kubeconfig FILE or set KUBECONFIG"


async def _execute(args: argparse.Namespace) -> int:
    problem = kubeconfig_problem(args.kubeconfig, os.environ)
    if problem is not None:
        raise CliError(problem)
    client = await SandboxClient.connect(namespace=args.namespace, kubeconfig=args.kubeconfig, context=args.context)
    async with client:
        handler: Handler = args.handler
        return await handler(client, args)
