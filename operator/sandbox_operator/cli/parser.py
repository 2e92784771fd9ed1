"""The command line: global options, one subparser per subcommand, and the checks argparse cannot express.

Usage errors (exit 2) are argparse's own: ``PROG SUBCOMMAND: error: argument --key: ...``. Each subcommand's
handler is set here as the ``handler`` default, so the list of subcommands exists once.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any, Final

from sandbox_operator.cli import copy, lifecycle, locations, run, terminal
from sandbox_operator.sdk.client import DEFAULT_READY_TIMEOUT

DEFAULT_PROGRAM: Final = "sandbox"
KUBECTL_PLUGIN: Final = "kubectl-"
DEFAULT_DELETE_TIMEOUT: Final = 60.0
OUTPUT_FORMATS: Final = ("text", "json")
# Subcommands whose last positional is a command line: everything after the first "--" belongs to it, verbatim.
COMMAND_LINE_SUBCOMMANDS: Final = frozenset({"run", "shell"})


def program_name(argv0: str) -> str:
    """How the user invoked us, for help and usage: ``kubectl sandbox`` for the kubectl plugin, else ``sandbox``."""
    base = os.path.basename(argv0).removesuffix(".exe")
    if base.startswith(KUBECTL_PLUGIN) and len(base) > len(KUBECTL_PLUGIN):
        return f"kubectl {base[len(KUBECTL_PLUGIN):].replace('_', '-')}"
    if not base or base.endswith(".py") or base.startswith("python"):
        return DEFAULT_PROGRAM  # python -m sandbox_operator.cli
    return base


def split_pair(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` as (NAME, VALUE), split at the first '='; ValueError if there is none or NAME is empty."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise ValueError(text)
    return name, value


class PairsAction(argparse.Action):
    """A repeatable ``--flag NAME=VALUE`` collected into a dict; a malformed pair is a usage error naming the flag.
    With ``unique``, a NAME given twice is one too (a key part has one value)."""

    def __init__(self, option_strings: Sequence[str], dest: str, unique: bool = False, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.unique = unique

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        try:
            name, value = split_pair(str(values))
        except ValueError:
            raise argparse.ArgumentError(self, f"expected {self.metavar}, not {values!r}") from None
        pairs = dict(getattr(namespace, self.dest, None) or {})
        if self.unique and name in pairs:
            raise argparse.ArgumentError(self, f"{name!r} is given twice")
        pairs[name] = value
        setattr(namespace, self.dest, pairs)


def positive_number(text: str) -> float:
    """A positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def byte_count(text: str) -> int:
    """A number of bytes, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of bytes, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more bytes, not {text!r}")
    return value


# Options accepted before and after the subcommand (``sandbox -n x list``, ``sandbox list -n x``); each takes a value.
GLOBAL_OPTIONS: Final[tuple[tuple[tuple[str, ...], dict[str, Any]], ...]] = (
    (("-n", "--namespace"), {"help": "the namespace (default: the kubeconfig context's)"}),
    (("--kubeconfig",), {"metavar": "FILE", "help": "the kubeconfig file (default: KUBECONFIG, ~/.kube/config)"}),
    (("--context",), {"help": "the kubeconfig context to use"}),
    (("-o", "--output"), {"choices": OUTPUT_FORMATS, "help": "text (default) or json"}),
)


def _global_options() -> argparse.ArgumentParser:
    """GLOBAL_OPTIONS, as a parent of the main parser or of one subparser (each needs its own: parents share their
    actions). Defaults are SUPPRESSed, so a subparser never overwrites a value given before the subcommand; the
    main parser sets the real ones."""
    options = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flags, settings in GLOBAL_OPTIONS:
        options.add_argument(*flags, default=argparse.SUPPRESS, **settings)
    return options


def _sandbox_options(parser: argparse.ArgumentParser) -> None:
    """What ``create`` and ``get-or-create`` make a Sandbox with."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="the container image, e.g. python:3.11-slim")
    source.add_argument(
        "--template", metavar="NAME", help="a SandboxTemplate to start from (a warm pod when a SandboxPool has one)"
    )
    parser.add_argument("--ttl", type=positive_number, metavar="SECONDS", help="delete it this long after creation")
    parser.add_argument(
        "--idle-timeout", type=positive_number, metavar="SECONDS", help="expire it after this long without activity"
    )
    parser.add_argument("--cpu", metavar="QUANTITY", help="CPU limit, e.g. 500m")
    parser.add_argument("--memory", metavar="QUANTITY", help="memory limit, e.g. 512Mi")
    _env_option(parser, "an environment variable of the sandbox (repeatable)")
    _wait_options(parser)


def _env_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--env", action=PairsAction, metavar="NAME=VALUE", default={}, help=help_text)


def _key_option(parser: argparse.ArgumentParser, help_text: str, *, required: bool) -> None:
    parser.add_argument(
        "--key", action=PairsAction, unique=True, metavar="PART=VALUE", default={}, required=required, help=help_text
    )


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", dest="wait", action="store_false", help="return without waiting until Ready")
    _timeout_option(parser, DEFAULT_READY_TIMEOUT, "how long to wait until Ready")


def _timeout_option(parser: argparse.ArgumentParser, default: float | None, help_text: str) -> None:
    shown = "none" if default is None else f"{default:g}"
    parser.add_argument(
        "--timeout", type=positive_number, default=default, metavar="SECONDS", help=f"{help_text} (default: {shown})"
    )


def build_parser(prog: str = DEFAULT_PROGRAM) -> argparse.ArgumentParser:
    """The whole command line; each subcommand sets ``handler``, the coroutine function that carries it out."""
    parser = argparse.ArgumentParser(
        prog=prog,
        parents=[_global_options()],
        allow_abbrev=False,
        description="Sandboxes on Kubernetes: create them, run commands and copy files in them, open a shell.",
        epilog=f"Run '{prog} SUBCOMMAND --help' for a subcommand's options.",
    )
    parser.set_defaults(namespace=None, kubeconfig=None, context=None, output="text")
    commands = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)

    def add(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, parents=[_global_options()], help=help_text, description=help_text, allow_abbrev=False
        )
        sub.set_defaults(handler=handler, usage_error=sub.error)
        return sub

    create = add("create", "create a Sandbox and wait until it is Ready; prints its name", lifecycle.create)
    create.add_argument("name", nargs="?", help="its name (default: sandbox-<random>)")
    _sandbox_options(create)

    get_or_create = add(
        "get-or-create",
        "the Sandbox for a key, created if there is none; prints its name",
        lifecycle.get_or_create,
    )
    _key_option(get_or_create, "a part of the key, e.g. --key user=alice (repeatable)", required=True)
    _sandbox_options(get_or_create)

    listing = add("list", "list Sandboxes (NAME PHASE READY KEY EXPIRES)", lifecycle.list_sandboxes)
    _key_option(listing, "only Sandboxes whose key has this part (repeatable)", required=False)

    get = add("get", "show one Sandbox", lifecycle.get)
    get.add_argument("name")

    command = add("run", "run a command in a Sandbox; exits with its exit code (124 on timeout)", run.run)
    command.add_argument("name")
    _timeout_option(command, None, "kill the command's whole process group after this long")
    command.add_argument("--cwd", metavar="DIR", help="the working directory")
    _env_option(command, "an environment variable of the command (repeatable)")
    command.add_argument("--shell", action="store_true", help="the command is one string, run by sh -c")
    command.add_argument(
        "--max-output-bytes",
        type=byte_count,
        metavar="N",
        help="keep at most N bytes of each stream (the rest is read and dropped)",
    )
    command.add_argument("--stdin", action="store_true", help="send this program's stdin to the command")
    command.add_argument("command", nargs="*", metavar="-- ARGV", help="the command and its arguments, after --")

    cp = add("cp", "copy files and directories between a Sandbox (NAME:PATH) and here (PATH, or - for stdio)", copy.cp)
    cp.add_argument("source", metavar="SRC")
    cp.add_argument("destination", metavar="DST")

    shell = add("shell", "an interactive shell (TTY) in a Sandbox; exits with its exit code", terminal.shell)
    shell.add_argument("name")
    shell.add_argument("command", nargs="*", metavar="-- ARGV", help="what to run instead of sh")

    suspend = add("suspend", "delete the pod, keep the workspace", lifecycle.suspend)
    suspend.add_argument("name")

    resume = add("resume", "start a suspended Sandbox again and wait until it is Ready", lifecycle.resume)
    resume.add_argument("name")
    _wait_options(resume)

    delete = add("delete", "delete a Sandbox (its pod and workspace go with it)", lifecycle.delete)
    delete.add_argument("name")
    delete.add_argument("--wait", action="store_true", help="return once it is gone")
    _timeout_option(delete, DEFAULT_DELETE_TIMEOUT, "how long to wait with --wait")

    wait = add("wait", "wait until a Sandbox is Ready", lifecycle.wait)
    wait.add_argument("name")
    _timeout_option(wait, DEFAULT_READY_TIMEOUT, "how long to wait")
    return parser


def subcommand_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: its first word that is neither a global option nor an option's value."""
    with_value = {flag for flags, _ in GLOBAL_OPTIONS for flag in flags}
    value_next = False
    for word in argv:
        if value_next:
            value_next = False
        elif word == "--":
            return None
        elif word.startswith("-"):
            value_next = word in with_value  # "--namespace=x" and "-nx" carry theirs
        else:
            return word
    return None


def parse_arguments(argv: Sequence[str], prog: str = DEFAULT_PROGRAM) -> argparse.Namespace:
    """Parse the command line (SystemExit 2 on a usage error). For ``run`` and ``shell``, everything after the first
    ``--`` is the command line, verbatim: argparse would take out every ``--`` in it (``grep -- -x``), and would
    not give it to a ``*`` positional that follows options."""
    parser = build_parser(prog)
    argv = list(argv)
    if "--" in argv and subcommand_of(argv) in COMMAND_LINE_SUBCOMMANDS:
        split = argv.index("--")
        args = parser.parse_args(argv[:split])
        args.command = [*args.command, *argv[split + 1 :]]
    else:
        args = parser.parse_args(argv)
    if args.subcommand == "run":
        if not args.command:
            args.usage_error("the command to run is missing, e.g. -- ls -l")
        if args.shell and len(args.command) != 1:
            args.usage_error("--shell takes one command string, e.g. --shell -- 'ls | wc -l'")
    if args.subcommand == "cp":
        try:
            args.source, args.destination = locations.parse_copy(args.source, args.destination)
        except ValueError as error:
            args.usage_error(str(error))
    return args
