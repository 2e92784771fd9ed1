"""The SDK's argument handling, and its in-sandbox scripts run by this machine's own shells (dash and busybox ash:
the two shells sandbox images have)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_operator.sdk import shell
from sandbox_operator.sdk.client import InvalidSpecError, build_spec
from sandbox_operator.sdk.commands import KILLED_EXIT, command_argv, wrapped_argv
from sandbox_operator.sdk.errors import (
    ExecError,
    SandboxFileError,
    SandboxFileNotFoundError,
    errno_from_text,
    file_error,
)
from sandbox_operator.sdk.files import parse_listing
from sandbox_operator.sdk.wire import exit_status

SHELLS = [pytest.param(["dash"], id="dash"), pytest.param(["busybox", "sh"], id="busybox")]


def test_an_argv_list_passes_as_it_is_and_a_string_needs_shell_true() -> None:
    assert command_argv(["echo", "$HOME; rm -rf /"], shell_command=False) == ["echo", "$HOME; rm -rf /"]
    assert command_argv("echo hi | wc -c", shell_command=True) == ["sh", "-c", "echo hi | wc -c"]
    with pytest.raises(TypeError, match="shell=True"):
        command_argv("echo hi", shell_command=False)
    with pytest.raises(TypeError, match="one command string"):
        command_argv(["echo"], shell_command=True)
    with pytest.raises(TypeError, match="non-empty list"):
        command_argv([], shell_command=False)
    with pytest.raises(ValueError, match="NUL"):
        command_argv(["a\x00b"], shell_command=False)


def test_the_wrapper_gets_the_timeout_in_whole_seconds_cwd_and_env_as_parameters() -> None:
    argv = wrapped_argv(["id"], 1.2, "/work dir", {"A": "x y", "B_2": ""})
    assert argv[:2] == ["sh", "-c"] and argv[2] == shell.RUN
    assert argv[3:] == ["sandbox-run", "2", "/work dir", "A=x y", "B_2=", "--", "id"]
    assert wrapped_argv(["id"], None, None, None)[4:] == ["0", "", "--", "id"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be positive"),
        ({"timeout": -1}, "timeout must be positive"),
        ({"env": {"1BAD": "x"}}, "env name '1BAD'"),
        ({"env": {"A": "x\x00"}}, "env['A']"),
        ({"cwd": ""}, "cwd must be a non-empty path"),
    ],
)
def test_bad_command_options_are_refused_before_anything_runs(kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"timeout": 5, "cwd": None, "env": None, **kwargs}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        wrapped_argv(["id"], options["timeout"], options["cwd"], options["env"])  # type: ignore[arg-type]


def test_a_spec_is_checked_against_the_api_model_naming_the_field() -> None:
    spec = build_spec(image="python:3.11-slim", ttl=90.5, idle_timeout=60, cpu="250m", env={"A": "1"})
    assert spec["lifetime"] == {"ttlSeconds": 91, "idleTimeoutSeconds": 60}
    assert spec["command"][0] == "sh", "without a command the container idles, ready for commands"
    with pytest.raises(InvalidSpecError, match=r"spec\.resources\.cpu"):
        build_spec(image="busybox", cpu="lots")
    with pytest.raises(InvalidSpecError, match=r"spec\.image"):
        build_spec(image="")
    with pytest.raises(InvalidSpecError, match="ttl must be positive"):
        build_spec(image="busybox", ttl=0)
    merged = build_spec(image="busybox", spec={"network": {"egress": {"mode": "None"}}, "resources": {"memory": "1Gi"}})
    assert merged["network"]["egress"]["mode"] == "None" and merged["resources"] == {"memory": "1Gi"}


def test_the_exit_status_frame_gives_the_code_or_an_error() -> None:
    assert exit_status(b'{"status":"Success"}').code == 0
    failure = {"status": "Failure", "reason": "NonZeroExitCode",
               "details": {"causes": [{"reason": "ExitCode", "message": "42"}]}}
    assert exit_status(json.dumps(failure).encode()).code == 42
    with pytest.raises(ExecError, match="executable file not found"):
        exit_status(b'{"status":"Failure","message":"exec: executable file not found"}')


def test_shell_errors_become_the_matching_oserror() -> None:
    assert errno_from_text("sh: can't create /etc/x: Read-only file system") == 30
    error = file_error(2, "/nope")
    assert isinstance(error, SandboxFileNotFoundError) and isinstance(error, FileNotFoundError)
    assert error.filename == "/nope"
    assert isinstance(file_error(30, "/etc/x"), SandboxFileError)


def test_a_listing_with_odd_names_parses() -> None:
    names = [b"a b", b"new\nline", b".hidden"]
    data = b"".join(n + b"\x00" for n in names) + b"\x00" + b"3 0 regular file\n0 60 directory\n7 0 symbolic link\n"
    entries = parse_listing("/d", data)
    assert [(e.name, e.type, e.size) for e in entries] == [
        ("a b", "file", 3), ("new\nline", "directory", 0), (".hidden", "symlink", 7)
    ]
    assert entries[0].path == "/d/a b" and parse_listing("/d", b"") == []
    with pytest.raises(SandboxFileError, match="changed while it was listed"):
        parse_listing("/d", b"a\x00\x00")


# --- the in-sandbox scripts, on real shells ------------------------------------------------------------------------


@pytest.fixture(params=SHELLS)
def sh(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    if shutil.which(request.param[0]) is None or shutil.which("setsid") is None:
        pytest.fail(f"{request.param[0]} and setsid are needed (Debian: dash, busybox-static, util-linux)")
    yield request.param


def _run(sh: list[str], argv: list[str], stdin: bytes = b"", timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    assert argv[:2] == ["sh", "-c"]
    return subprocess.run([*sh, "-c", *argv[2:]], input=stdin, capture_output=True, timeout=timeout)


def test_the_wrapper_reports_the_process_group_first_and_passes_the_exit_code(sh: list[str]) -> None:
    result = _run(sh, wrapped_argv(["sh", "-c", "echo out; echo err >&2; exit 3"], None, None, {"X": "1"}))
    first, _, rest = result.stderr.partition(b"\n")
    assert first.startswith(shell.PGID_MARKER) and first[len(shell.PGID_MARKER):].isdigit()
    assert (result.returncode, result.stdout, rest) == (3, b"out\n", b"err\n")


def test_the_wrapper_gives_stdin_to_the_command_and_sets_cwd_and_env(sh: list[str]) -> None:
    argv = wrapped_argv(["sh", "-c", 'pwd; echo "$V"; cat'], None, "/tmp", {"V": "a b;c"})
    result = _run(sh, argv, stdin=b"in\x00put")
    assert result.stdout == b"/tmp\na b;c\nin\x00put"


def test_at_the_timeout_the_whole_process_group_is_killed(sh: list[str]) -> None:
    marker = f"sdk-test-{uuid.uuid4().hex}"
    command = ["sh", "-c", "sleep 300 & (sleep 301; echo late) & sleep 302"]
    started = time.monotonic()
    result = _run(sh, wrapped_argv(command, 1, None, {"SDK_TEST_MARKER": marker}))
    assert result.returncode == KILLED_EXIT and time.monotonic() - started < 10
    assert _processes_with(marker) == [], "a process of the command survived the timeout"


def test_the_survivor_check_sees_a_process_that_was_not_killed() -> None:
    marker = f"sdk-test-{uuid.uuid4().hex}"
    survivor = subprocess.Popen(["sleep", "30"], env={"SDK_TEST_MARKER": marker, "PATH": "/usr/bin:/bin"})
    try:
        assert _processes_with(marker) == [str(survivor.pid)]
    finally:
        survivor.kill()
        survivor.wait()


def _processes_with(marker: str) -> list[str]:
    """Processes whose environment holds the marker (every process a command starts inherits it)."""
    time.sleep(0.2)  # SIGKILL is delivered asynchronously
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"SDK_TEST_MARKER={marker}".encode() in environ.read_bytes():
                found.append(environ.parent.name)
        except OSError:
            continue
    return found


def test_a_missing_working_directory_is_refused_with_its_errno(sh: list[str]) -> None:
    result = _run(sh, wrapped_argv(["true"], None, "/nonexistent-dir", None))
    assert result.returncode == shell.ERROR_EXIT
    assert result.stderr == shell.ERROR_MARKER + b"ENOENT cwd\n"


def test_the_file_scripts_refuse_with_errno_names(sh: list[str], tmp_path: pytest.TempPathFactory) -> None:
    directory = str(tmp_path)
    read = _run(sh, shell.argv(shell.READ, "r", f"{directory}/missing", "10"))
    assert read.stderr == shell.ERROR_MARKER + b"ENOENT\n"
    _run(sh, shell.argv(shell.WRITE, "w", f"{directory}/sub/f", "1"), stdin=b"0123456789abc")
    too_big = _run(sh, shell.argv(shell.READ, "r", f"{directory}/sub/f", "10"))
    assert too_big.stderr == shell.ERROR_MARKER + b"EFBIG 13\n"
    assert _run(sh, shell.argv(shell.READ, "r", f"{directory}/sub/f", "13")).stdout == b"0123456789abc"
    listing = parse_listing(directory, _run(sh, shell.argv(shell.LIST, "l", directory)).stdout)
    assert [(e.name, e.type) for e in listing] == [("sub", "directory")]
    not_empty = _run(sh, shell.argv(shell.REMOVE, "rm", f"{directory}/sub", "0"))
    assert not_empty.returncode != 0 and errno_from_text(not_empty.stderr.decode()) is not None
    assert _run(sh, shell.argv(shell.REMOVE, "rm", f"{directory}/sub", "1")).returncode == 0


def test_environment_names_cannot_steer_the_wrapper(sh: list[str]) -> None:
    started = time.monotonic()
    result = _run(sh, wrapped_argv(["sh", "-c", 'sleep 5; echo "$t $d $n"'], 1, "/tmp", {"t": "0", "d": "/", "n": "9"}))
    assert result.returncode == KILLED_EXIT and time.monotonic() - started < 4, "the timeout still holds"
    shown = _run(sh, wrapped_argv(["sh", "-c", 'echo "$t $d $n $(pwd)"'], None, "/tmp", {"t": "0", "d": "/", "n": "9"}))
    assert shown.stdout == b"0 / 9 /tmp\n"


def test_what_a_command_leaves_running_in_its_group_is_killed_when_it_ends(sh: list[str]) -> None:
    marker = f"sdk-test-{uuid.uuid4().hex}"
    started = time.monotonic()
    result = _run(sh, wrapped_argv(["sh", "-c", "sleep 30 & echo left"], None, None, {"SDK_TEST_MARKER": marker}))
    assert result.stdout == b"left\n" and time.monotonic() - started < 10, "its output ended with it"
    assert _processes_with(marker) == []


def test_reading_anything_but_a_regular_file_and_removing_the_root_are_refused(sh: list[str], tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    read = _run(sh, shell.argv(shell.READ, "r", str(fifo), "10"), timeout=10)
    assert read.stderr.startswith(shell.ERROR_MARKER + b"EINVAL")
    for root in ("/", "//", "/."):
        removed = _run(sh, shell.argv(shell.REMOVE, "rm", root, "1"))
        assert removed.stderr.startswith(shell.ERROR_MARKER + b"EPERM"), root


def _archive(*members: tuple[str, bytes | None, str | None]) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                archive.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_download_takes_only_files_and_directories_inside_the_target(tmp_path: Path) -> None:
    from sandbox_operator.sdk.files import _unpack

    top = _unpack(_archive(("tree", None, None), ("tree/a.txt", b"a", None)), tmp_path / "ok")
    assert top == (tmp_path / "ok" / "tree").resolve() and (top / "a.txt").read_bytes() == b"a"
    for hostile in (_archive(("tree/link", None, "/etc/passwd")), _archive(("../escape.txt", b"x", None)),
                    _archive(("/abs.txt", b"x", None))):
        with pytest.raises(SandboxFileError, match="refusing"):
            _unpack(hostile, tmp_path / "bad")
    assert not (tmp_path / "escape.txt").exists()


def test_a_spec_from_a_template_carries_only_the_reference_and_the_lifetime() -> None:
    spec = build_spec(template="python-small", ttl=600, idle_timeout=120)
    assert spec == {"templateRef": {"name": "python-small"}, "lifetime": {"ttlSeconds": 600, "idleTimeoutSeconds": 120}}
    with pytest.raises(InvalidSpecError, match="command, cpu: a sandbox made from a template takes these from it"):
        build_spec(template="python-small", command=["sh"], cpu="1")
    with pytest.raises(InvalidSpecError, match="exactly one of image and template"):
        build_spec(image="busybox", template="python-small")
    with pytest.raises(InvalidSpecError, match="exactly one of image and template"):
        build_spec()
    with pytest.raises(InvalidSpecError, match=r"spec: .*templateRef"):
        build_spec(template="python-small", spec={"resources": {"cpu": "2"}})
