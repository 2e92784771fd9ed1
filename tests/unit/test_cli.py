"""The CLI without a cluster: its command line, cp's locations, what it prints, and how errors end it."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from sandbox_operator.cli import copy as copy_command
from sandbox_operator.cli import kubeconfig_problem, lifecycle, main, output, progress
from sandbox_operator.cli import run as run_command
from sandbox_operator.cli import terminal as terminal_command
from sandbox_operator.cli.errors import CliError, describe_error
from sandbox_operator.cli.locations import (
    LocalPath,
    SandboxPath,
    local_file_path,
    parse_copy,
    parse_location,
    remote_file_path,
)
from sandbox_operator.cli.parser import parse_arguments, program_name, split_pair, subcommand_of
from sandbox_operator.cli.stdin import stdin_chunks
from sandbox_operator.sdk import (
    AccessDeniedError,
    CommandResult,
    InvalidKeyError,
    Sandbox,
    SandboxClient,
    SandboxFileNotFoundError,
    SandboxNotFoundError,
    WaitTimeoutError,
)
from sandbox_operator.sdk.client import DEFAULT_READY_TIMEOUT

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The usage error argparse prints for ``argv`` (and checks it exits 2)."""
    with pytest.raises(SystemExit) as exit_:
        parse_arguments(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def sandbox(name: str = "box", **status: Any) -> Sandbox:
    """A Sandbox handle on a body only (nothing here talks to a cluster)."""
    body = {
        "metadata": {"name": name, "namespace": "team", "generation": 1, "annotations": status.pop("annotations", {})},
        "spec": {"image": "python:3.11-slim"},
        "status": {"observedGeneration": 1, **status},
    }
    return Sandbox(cast(SandboxClient, None), body)


# --- program name and global options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv0", "name"),
    [
        ("/usr/local/bin/kubectl-sandbox", "kubectl sandbox"),
        ("kubectl-sandbox", "kubectl sandbox"),
        ("/home/me/.venv/bin/sandbox", "sandbox"),
        ("/repo/operator/sandbox_operator/cli/__main__.py", "sandbox"),
    ],
)
def test_the_program_names_itself_as_invoked_plugin_or_not(argv0: str, name: str) -> None:
    assert program_name(argv0) == name


def test_global_options_are_read_before_and_after_the_subcommand() -> None:
    before = parse_arguments(["-n", "team", "--kubeconfig", "/k", "--context", "c", "-o", "json", "list"])
    after = parse_arguments(["list", "-n", "team", "--kubeconfig", "/k", "--context", "c", "-o", "json"])
    for args in (before, after):
        assert (args.namespace, args.kubeconfig, args.context, args.output) == ("team", "/k", "c", "json")


def test_global_options_default_to_the_kubeconfig_and_text() -> None:
    args = parse_arguments(["list"])
    assert (args.namespace, args.kubeconfig, args.context, args.output) == (None, None, None, "text")


def test_an_unknown_output_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "argument -o/--output: invalid choice: 'yaml'" in usage_error(["-o", "yaml", "list"], capsys)


def test_usage_errors_and_help_are_exit_codes_of_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create"]) == 2
    assert "one of the arguments --image --template is required" in capsys.readouterr().err
    assert main(["--help"]) == 0


# --- every subcommand ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "handler"),
    [
        (["create", "--image", "i"], lifecycle.create),
        (["get-or-create", "--key", "user=a", "--image", "i"], lifecycle.get_or_create),
        (["list"], lifecycle.list_sandboxes),
        (["get", "box"], lifecycle.get),
        (["run", "box", "--", "true"], run_command.run),
        (["cp", "box:/a", "b"], copy_command.cp),
        (["shell", "box"], terminal_command.shell),
        (["suspend", "box"], lifecycle.suspend),
        (["resume", "box"], lifecycle.resume),
        (["delete", "box"], lifecycle.delete),
        (["wait", "box"], lifecycle.wait),
    ],
)
def test_each_subcommand_is_carried_out_by_its_handler(argv: list[str], handler: object) -> None:
    assert parse_arguments(argv).handler is handler


def test_create_reads_the_sandbox_options() -> None:
    args = parse_arguments([
        "create", "box", "--image", "python:3.11-slim", "--ttl", "3600", "--idle-timeout", "600",
        "--cpu", "250m", "--memory", "256Mi", "--env", "A=1", "--env", "B=x=y", "--no-wait", "--timeout", "30",
    ])
    assert (args.name, args.image, args.ttl, args.idle_timeout) == ("box", "python:3.11-slim", 3600, 600)
    assert (args.cpu, args.memory, args.env) == ("250m", "256Mi", {"A": "1", "B": "x=y"})
    assert (args.wait, args.timeout) == (False, 30)


def test_create_names_the_sandbox_itself_only_when_asked_and_waits_by_default() -> None:
    args = parse_arguments(["create", "--image", "busybox"])
    assert (args.name, args.wait, args.timeout, args.env, args.ttl) == (None, True, DEFAULT_READY_TIMEOUT, {}, None)


def test_get_or_create_collects_the_key_parts() -> None:
    args = parse_arguments(["get-or-create", "--key", "user=alice", "--key", "project=p=1", "--image", "i"])
    assert args.key == {"user": "alice", "project": "p=1"}


def test_get_or_create_needs_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert "required: --key" in usage_error(["get-or-create", "--image", "i"], capsys)


def test_list_filters_by_key_parts_only_when_given() -> None:
    assert parse_arguments(["list"]).key == {}
    assert parse_arguments(["list", "--key", "user=alice"]).key == {"user": "alice"}


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["list", "--key", "user"], "argument --key: expected PART=VALUE, not 'user'"),
        (["list", "--key", "=alice"], "argument --key: expected PART=VALUE, not '=alice'"),
        (["create", "--image", "i", "--env", "HOME"], "argument --env: expected NAME=VALUE, not 'HOME'"),
        (["run", "box", "--env", "X", "--", "true"], "argument --env: expected NAME=VALUE, not 'X'"),
        (["list", "--key", "user=a", "--key", "user=b"], "argument --key: 'user' is given twice"),
    ],
)
def test_a_malformed_pair_is_a_usage_error_naming_the_flag(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert named in usage_error(argv, capsys)


def test_a_later_env_value_wins() -> None:
    assert parse_arguments(["run", "box", "--env", "A=1", "--env", "A=2", "--", "env"]).env == {"A": "2"}


def test_split_pair_splits_at_the_first_equals_sign() -> None:
    assert split_pair("a=b=c") == ("a", "b=c")
    assert split_pair("a=") == ("a", "")
    with pytest.raises(ValueError):
        split_pair("a")


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["wait", "box", "--timeout", "0"], "argument --timeout: expected a positive number of seconds, not '0'"),
        (["create", "--image", "i", "--ttl", "soon"], "argument --ttl: expected a number of seconds, not 'soon'"),
        (["run", "box", "--max-output-bytes", "-1", "--", "true"], "expected 0 or more bytes, not '-1'"),
    ],
)
def test_numbers_are_checked_when_parsed(argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert problem in usage_error(argv, capsys)


def test_get_suspend_resume_delete_and_wait_take_a_name() -> None:
    assert parse_arguments(["get", "box"]).name == "box"
    assert parse_arguments(["suspend", "box"]).name == "box"
    resume = parse_arguments(["resume", "box", "--no-wait", "--timeout", "9"])
    assert (resume.name, resume.wait, resume.timeout) == ("box", False, 9)
    delete = parse_arguments(["delete", "box", "--wait"])
    assert (delete.name, delete.wait) == ("box", True)
    assert parse_arguments(["delete", "box"]).wait is False
    wait = parse_arguments(["wait", "box", "--timeout", "5"])
    assert (wait.name, wait.timeout) == ("box", 5)


# --- run and shell: the command line after -- ---------------------------------------------------------------------


def test_run_takes_the_command_after_double_dash_verbatim() -> None:
    args = parse_arguments(["run", "box", "--timeout", "5", "--cwd", "/tmp", "--", "grep", "--", "-x", "--cwd"])
    assert args.command == ["grep", "--", "-x", "--cwd"]
    assert (args.name, args.timeout, args.cwd, args.shell, args.stdin) == ("box", 5, "/tmp", False, False)


def test_run_options_may_follow_the_name_or_precede_it() -> None:
    after = parse_arguments(["-n", "team", "run", "box", "--stdin", "--max-output-bytes", "10", "--", "cat"])
    before = parse_arguments(["run", "--stdin", "--max-output-bytes", "10", "box", "--", "cat"])
    for args in (after, before):
        assert (args.name, args.stdin, args.max_output_bytes, args.command) == ("box", True, 10, ["cat"])


def test_run_has_no_timeout_unless_given() -> None:
    assert parse_arguments(["run", "box", "--", "sleep", "600"]).timeout is None


def test_run_takes_a_command_without_double_dash_when_it_has_no_options() -> None:
    assert parse_arguments(["run", "box", "echo", "hi"]).command == ["echo", "hi"]


def test_run_shell_takes_one_command_string() -> None:
    args = parse_arguments(["run", "box", "--shell", "--", "ls | wc -l"])
    assert (args.shell, args.command) == (True, ["ls | wc -l"])


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["run", "box"], "the command to run is missing"),
        (["run", "box", "--"], "the command to run is missing"),
        (["run", "box", "--shell", "--", "ls", "-l"], "--shell takes one command string"),
    ],
)
def test_run_without_a_proper_command_is_a_usage_error(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert problem in usage_error(argv, capsys)


def test_shell_runs_sh_unless_told_otherwise() -> None:
    assert parse_arguments(["shell", "box"]).command == []
    assert parse_arguments(["shell", "box", "--", "bash", "-l", "--"]).command == ["bash", "-l", "--"]


def test_the_subcommand_is_found_past_global_options_and_their_values() -> None:
    assert subcommand_of(["-n", "run", "--kubeconfig", "/k", "shell", "box"]) == "shell"
    assert subcommand_of(["--namespace=run", "-o", "json", "run", "box"]) == "run"
    assert subcommand_of(["--", "run"]) is None


def test_a_double_dash_outside_run_and_shell_is_argparse_s() -> None:
    args = parse_arguments(["cp", "--", "-odd-name", "box:/tmp/"])
    assert (args.source, args.destination) == (LocalPath("-odd-name"), SandboxPath("box", "/tmp/"))


# --- cp locations -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("box:/workspace/a.txt", SandboxPath("box", "/workspace/a.txt")),
        ("box:relative/a.txt", SandboxPath("box", "relative/a.txt")),
        ("box:/a:b", SandboxPath("box", "/a:b")),
        ("./a:b", LocalPath("./a:b")),
        ("/tmp/a:b", LocalPath("/tmp/a:b")),
        ("dir/a:b", LocalPath("dir/a:b")),
        (":x", LocalPath(":x")),
        ("a.txt", LocalPath("a.txt")),
        ("-", LocalPath("-")),
    ],
)
def test_a_location_is_in_a_sandbox_only_as_name_colon_path(text: str, location: object) -> None:
    assert parse_location(text) == location


def test_stdio_is_a_single_dash() -> None:
    assert LocalPath("-").stdio and not LocalPath("./-").stdio


@pytest.mark.parametrize(("text", "problem"), [("box:", "names no path in sandbox box"), ("", "cannot be empty")])
def test_a_location_without_a_path_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_location(text)


def test_cp_copies_between_here_and_one_sandbox(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_copy("a.txt", "box:/tmp/") == (LocalPath("a.txt"), SandboxPath("box", "/tmp/"))
    assert parse_copy("box:/tmp/a", "-") == (SandboxPath("box", "/tmp/a"), LocalPath("-"))
    assert "one of SRC and DST must be in a sandbox" in usage_error(["cp", "a", "./b:c"], capsys)
    assert "from one sandbox to another is not supported" in usage_error(["cp", "x:/a", "y:/b"], capsys)
    assert "names no path in sandbox box" in usage_error(["cp", "a", "box:"], capsys)


def test_a_local_file_lands_at_the_remote_path_or_inside_it_with_a_slash() -> None:
    assert remote_file_path("a.txt", "/workspace/") == "/workspace/a.txt"
    assert remote_file_path("a.txt", "/workspace/b.txt") == "/workspace/b.txt"


def test_a_sandbox_file_lands_at_the_local_path_or_inside_a_directory() -> None:
    assert local_file_path("/workspace/a.txt", "b.txt", local_is_directory=False) == "b.txt"
    assert local_file_path("/workspace/a.txt", "out", local_is_directory=True) == os.path.join("out", "a.txt")
    assert local_file_path("/workspace/a.txt", "new/", local_is_directory=False) == os.path.join("new/", "a.txt")


# --- output -------------------------------------------------------------------------------------------------------


def test_a_command_result_is_one_json_object_with_text_output() -> None:
    result = CommandResult(exit_code=7, stdout=b"ok \xff\n", stderr=b"warn\n", truncated=True, timed_out=False,
                           duration=1.23456)
    document = json.loads(json.dumps(output.result_document(result)))
    assert document == {"exit_code": 7, "stdout": "ok \ufffd\n", "stderr": "warn\n", "truncated": True,
                        "timed_out": False, "duration_seconds": 1.235}


def test_emit_prints_json_or_text(capsys: pytest.CaptureFixture[str]) -> None:
    output.emit("json", {"name": "box"}, "box")
    assert json.loads(capsys.readouterr().out) == {"name": "box"}
    output.emit("text", {"name": "box"}, "box")
    assert capsys.readouterr().out == "box\n"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.9, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (3660, "1h1m"),
                          (86400, "1d"), (90000, "1d1h")],
)
def test_durations_read_as_kubectl_ages(seconds: float, text: str) -> None:
    assert output.duration_text(seconds) == text


def test_expiry_reads_as_time_left() -> None:
    assert output.remaining_text(None, NOW) == "-"
    assert output.remaining_text(NOW + timedelta(minutes=30), NOW) == "30m"
    assert output.remaining_text(NOW - timedelta(seconds=1), NOW) == "expired"


def ready_status(**fields: Any) -> dict[str, Any]:
    return {"phase": "Ready", "expiresAt": "2026-01-01T13:00:00Z", "conditions": [
        {"type": "Ready", "status": "True", "reason": "PodReady", "message": "pod sbx-box is ready"}], **fields}


def test_list_is_a_table_of_name_phase_ready_key_and_expiry() -> None:
    keyed = sandbox("sandbox-abc", annotations={"sandbox-operator.io/key": '{"user":"alice","project":"p1"}'},
                    **ready_status())
    pending = sandbox("box", phase="Pending")
    lines = output.sandbox_table([keyed, pending], NOW).splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "READY", "KEY", "EXPIRES"]
    assert lines[1].split() == ["sandbox-abc", "Ready", "True", "project=p1,user=alice", "1h"]
    assert lines[2].split() == ["box", "Pending", "False", "-", "-"]
    assert lines[1].index("Ready") == lines[2].index("Pending") == lines[0].index("PHASE"), "columns line up"


def test_a_sandbox_document_holds_its_state() -> None:
    document = output.sandbox_document(sandbox("box", **ready_status()))
    assert document == {
        "name": "box", "namespace": "team", "phase": "Ready", "ready": True, "reason": "PodReady",
        "message": "pod sbx-box is ready", "key": None, "expires_at": "2026-01-01T13:00:00+00:00", "pod": "sbx-box",
        "image": "python:3.11-slim",
    }


def test_get_shows_one_field_a_line() -> None:
    details = output.sandbox_details(sandbox("box", **ready_status()), NOW)
    assert "Phase:     Ready" in details and "Ready:     True (PodReady)" in details
    assert "Expires:   2026-01-01T13:00:00+00:00 (1h)" in details


def test_the_progress_line_shows_phase_reason_and_seconds_within_the_width() -> None:
    pending = sandbox("box", phase="Pending", conditions=[
        {"type": "Ready", "status": "False", "reason": "ContainerCreating", "message": "pulling " + "x" * 200}])
    line = progress.progress_line("|", pending, 12.4, width=80)
    assert line.startswith("| waiting for box: 12s, Pending (ContainerCreating: pulling x")
    assert len(line) < 80


# --- errors -------------------------------------------------------------------------------------------------------


def test_errors_read_as_one_line_and_keep_the_sdk_message() -> None:
    denied = AccessDeniedError("create", "pods/exec", "team", "ask for exec access")
    assert describe_error(denied) == str(denied)
    assert "may not create pods/exec in namespace 'team'" in (describe_error(denied) or "")
    assert describe_error(SandboxNotFoundError('sandboxes "x" not found')) == 'sandboxes "x" not found'
    assert describe_error(InvalidKeyError("key['user'] must not be empty")) == "key['user'] must not be empty"
    assert describe_error(CliError("first\nsecond")) == "first; second"
    waited = WaitTimeoutError("box", "Pending", "ImagePulling", "slow", "was not ready within 5s")
    assert describe_error(waited) == "sandbox box was not ready within 5s (phase Pending, reason ImagePulling): slow"


def test_file_errors_say_where_the_file_is() -> None:
    remote = SandboxFileNotFoundError(2, "No such file or directory (ENOENT)", "/workspace/a")
    assert describe_error(remote) == "/workspace/a (in the sandbox): No such file or directory (ENOENT)"
    local = FileNotFoundError(2, "No such file or directory", "a.txt")
    assert describe_error(local) == "a.txt: No such file or directory"


def test_an_unexpected_error_is_left_to_its_traceback() -> None:
    assert describe_error(KeyError("bug")) is None


def test_a_missing_kubeconfig_is_one_error_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--kubeconfig", str(tmp_path / "none"), "list"]) == 1
    assert capsys.readouterr().err == f"error: no kubeconfig at {tmp_path / 'none'}: pass --kubeconfig FILE or " \
        "set KUBECONFIG\n"


def test_a_kubeconfig_is_looked_for_where_the_client_looks(tmp_path: Path) -> None:
    present = tmp_path / "config"
    present.write_text("{}")
    assert kubeconfig_problem(str(present), {}) is None
    assert kubeconfig_problem(None, {"KUBECONFIG": f"{tmp_path / 'x'}{os.pathsep}{present}"}) is None
    assert kubeconfig_problem(None, {"KUBECONFIG": str(tmp_path / "x")}) is not None
    assert kubeconfig_problem(None, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None, "in a pod"


# --- streams ------------------------------------------------------------------------------------------------------


def test_output_beyond_the_cap_is_counted_and_not_written() -> None:
    stream = io.BytesIO()
    sink = run_command.OutputSink(stream, 5, asyncio.Event())
    for chunk in (b"abc", b"defg", b"hij"):
        sink(chunk)
    assert (stream.getvalue(), sink.written, sink.dropped) == (b"abcde", 5, 5)


def test_stdin_is_read_in_chunks_from_a_pipe_and_a_file(tmp_path: Path) -> None:
    async def read_all(fd: int) -> bytes:
        return b"".join([chunk async for chunk in stdin_chunks(fd)])

    reader, writer = os.pipe()
    os.write(writer, b"piped")
    os.close(writer)
    assert asyncio.run(read_all(reader)) == b"piped"
    os.close(reader)
    path = tmp_path / "input"
    path.write_bytes(b"x" * 100_000)
    with path.open("rb") as handle:
        assert asyncio.run(read_all(handle.fileno())) == b"x" * 100_000


def test_a_stale_readiness_report_does_not_stall_the_event_loop() -> None:
    # The loop may report stdin readable after its data was read already: a blocking read would then hold the whole
    # loop (and a shell session's output) until the next key.
    reader, writer = os.pipe()

    async def scenario() -> list[bytes]:
        chunks = stdin_chunks(reader)
        os.write(writer, b"a")
        first = await anext(chunks)
        await asyncio.sleep(0)
        second = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0.2)  # never returns if reading stdin blocked the loop
        os.write(writer, b"b")
        received = [first, await second]
        os.close(writer)
        return received + [chunk async for chunk in chunks]

    outcome: list[list[bytes]] = []
    thread = threading.Thread(target=lambda: outcome.append(asyncio.run(scenario())), daemon=True)
    thread.start()
    thread.join(timeout=5)
    if thread.is_alive():
        os.write(writer, b"!")  # unblock the read so the thread can end
    else:
        os.close(reader)
    assert outcome == [[b"a", b"b"]], "the event loop stalled in a read"
