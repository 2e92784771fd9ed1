"""The CLI as a user runs it (``python -m sandbox_operator.cli``, a process of its own) against sandboxes on the real
node: exit codes, streamed output, JSON documents, cp both ways, keys, an interactive shell, one-line errors."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from localcluster.handle import Cluster

pytestmark = pytest.mark.node

PYTHON = "python:3.11-slim"  # the local node holds it under its public name
BOX = "cli-box"
SMALL = ("--cpu", "200m", "--memory", "256Mi")

Cli = Callable[..., subprocess.CompletedProcess[bytes]]


def cli_argv(namespace: str, *argv: str) -> list[str]:
    return [sys.executable, "-m", "sandbox_operator.cli", "-n", namespace, *argv]


@pytest.fixture(scope="module")
def cli_env(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}


@pytest.fixture(scope="module")
def cli(sdk_namespace: str, cli_env: dict[str, str]) -> Cli:
    """``cli(*argv, input=b"...")``: run the CLI in the test namespace to its end; never raises on exit code."""

    def run(*argv: str, input: bytes | None = None, timeout: float = 180, env: dict[str, str] | None = None) -> Any:
        return subprocess.run(cli_argv(sdk_namespace, *argv), input=input, capture_output=True, timeout=timeout,
                              env=env or cli_env)

    return run


@pytest.fixture(scope="module")
def box(cli: Cli) -> str:
    """A python sandbox made by ``create`` (which prints its name once it is Ready)."""
    created = cli("create", BOX, "--image", PYTHON, *SMALL)
    assert created.returncode == 0, created.stderr
    assert created.stdout == f"{BOX}\n".encode()
    return BOX


def test_run_exits_with_the_command_s_exit_code(cli: Cli, box: str) -> None:
    done = cli("run", box, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (done.returncode, done.stdout, done.stderr) == (7, b"out\n", b"err\n")
    assert cli("run", box, "--", "true").returncode == 0


def test_run_streams_output_while_the_command_runs(sdk_namespace: str, cli_env: dict[str, str], box: str) -> None:
    process = subprocess.Popen(cli_argv(sdk_namespace, "run", box, "--", "sh", "-c", "echo first; sleep 3; echo last"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"first\n"
        assert process.poll() is None, "the first line arrived while the command was still running"
        rest, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert (rest, process.returncode) == (b"last\n", 0)


def test_run_as_json_is_one_document(cli: Cli, box: str) -> None:
    done = cli("-o", "json", "run", box, "--", "python3", "-c", "import sys; print(6 * 7); sys.exit(3)")
    assert done.returncode == 3
    document = json.loads(done.stdout)
    assert set(document) == {"exit_code", "stdout", "stderr", "truncated", "timed_out", "duration_seconds"}
    assert (document["exit_code"], document["stdout"], document["timed_out"]) == (3, "42\n", False)


def test_run_past_its_timeout_exits_124(cli: Cli, box: str) -> None:
    started = time.monotonic()
    done = cli("run", box, "--timeout", "2", "--", "sleep", "60")
    assert done.returncode == 124 and b"timed out" in done.stderr
    assert time.monotonic() - started < 30
    as_json = cli("-o", "json", "run", box, "--timeout", "1", "--", "sleep", "60")
    assert as_json.returncode == 124 and json.loads(as_json.stdout)["timed_out"] is True


def test_run_sends_stdin_and_runs_shell_strings(cli: Cli, box: str) -> None:
    assert cli("run", box, "--stdin", "--", "wc", "-c", input=b"x" * 300_000).stdout.strip() == b"300000"
    piped = cli("run", box, "--shell", "--env", "WHO=cli", "--cwd", "/tmp", "--", 'echo "$WHO in $(pwd)"')
    assert piped.stdout == b"cli in /tmp\n"


def test_cp_round_trips_a_file_both_ways(cli: Cli, box: str, tmp_path: Path) -> None:
    original = tmp_path / "blob.bin"
    original.write_bytes(os.urandom(1024 * 1024) + bytes(range(256)))
    assert cli("cp", str(original), f"{box}:/workspace/in/").returncode == 0
    listed = cli("run", box, "--", "ls", "-l", "/workspace/in/blob.bin")
    assert listed.returncode == 0, listed.stderr
    back = tmp_path / "back"
    back.mkdir()
    copied = cli("-o", "json", "cp", f"{box}:/workspace/in/blob.bin", str(back))
    assert copied.returncode == 0, copied.stderr
    assert json.loads(copied.stdout)["destination"] == str(back / "blob.bin")
    assert (back / "blob.bin").read_bytes() == original.read_bytes()


def test_cp_moves_stdio_and_directory_trees(cli: Cli, box: str, tmp_path: Path) -> None:
    assert cli("cp", "-", f"{box}:/workspace/note.txt", input=b"from stdin\n").returncode == 0
    assert cli("cp", f"{box}:/workspace/note.txt", "-").stdout == b"from stdin\n"
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"a")
    (tree / "sub" / "b.txt").write_bytes(b"b")
    assert cli("cp", str(tree), f"{box}:/workspace/trees").returncode == 0
    assert cli("cp", f"{box}:/workspace/trees/tree", str(tmp_path / "down")).returncode == 0
    assert (tmp_path / "down" / "tree" / "sub" / "b.txt").read_bytes() == b"b"
    assert (tmp_path / "down" / "tree" / "a.txt").read_bytes() == b"a"


def test_list_by_key_finds_a_sandbox_made_by_get_or_create(cli: Cli) -> None:
    user = f"user-{uuid.uuid4().hex[:6]}"
    made = cli("get-or-create", "--key", f"user={user}", "--key", "project=cli", "--image", PYTHON, *SMALL)
    assert made.returncode == 0, made.stderr
    name = made.stdout.decode().strip()
    again = cli("get-or-create", "--key", "project=cli", "--key", f"user={user}", "--image", PYTHON, *SMALL)
    assert again.stdout.decode().strip() == name, "the same key names the same sandbox"
    found = json.loads(cli("-o", "json", "list", "--key", f"user={user}").stdout)
    assert [(item["name"], item["key"], item["ready"]) for item in found] == [
        (name, {"project": "cli", "user": user}, True)]
    assert json.loads(cli("-o", "json", "list", "--key", f"user={user}-other").stdout) == []
    table = cli("list", "--key", "project=cli").stdout.decode().splitlines()
    assert table[0].split() == ["NAME", "PHASE", "READY", "KEY", "EXPIRES"]
    assert any(line.split()[0] == name for line in table[1:])


def test_shell_is_interactive_and_exits_with_the_shell_s_code(
    sdk_namespace: str, cli_env: dict[str, str], box: str
) -> None:
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the CLI, with the pty as its terminal
        os.execve(sys.executable, cli_argv(sdk_namespace, "shell", box), cli_env)
    seen = b""

    def read_until(marker: bytes, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < deadline:
            if select.select([terminal], [], [], 0.2)[0]:
                try:
                    seen += os.read(terminal, 4096)
                except OSError:  # the CLI has exited
                    return

    try:
        read_until(b"$ ")
        os.write(terminal, b"tty; echo $((6 * 7))\r")  # each key is answered at once, not at the next one
        read_until(b"42\r\n", timeout=10)
        os.write(terminal, b"exit 3\r")
        read_until(b"never", timeout=10)
    finally:
        for _ in range(100):
            ended, status = os.waitpid(pid, os.WNOHANG)
            if ended:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        os.close(terminal)
    assert b"/dev/pts/" in seen, "the remote side has a TTY"
    assert b"42\r\n" in seen
    assert os.waitstatus_to_exitcode(status) == 3


def test_errors_are_one_line_without_a_traceback(
    cli: Cli, cluster: Cluster, sdk_namespace: str, tmp_path: Path
) -> None:
    missing = cli("get", "no-such-sandbox")
    assert missing.returncode == 1
    assert missing.stderr.decode().splitlines() == ['error: sandboxes.sandbox-operator.io "no-such-sandbox" not found']
    stranger = cluster.user_kubeconfig(tmp_path / "stranger.kubeconfig", f"stranger-{uuid.uuid4().hex[:6]}")
    denied = cli("list", env={**os.environ, "KUBECONFIG": str(stranger)})
    assert denied.returncode == 1
    assert denied.stderr.decode().splitlines() == [
        f"error: forbidden: the caller may not list sandboxes in namespace {sdk_namespace!r}"]
