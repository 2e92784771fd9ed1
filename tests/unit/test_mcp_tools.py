"""The MCP tools refuse bad input before anything reaches Kubernetes, naming the field or the limit; the tool list
and schemas are what agents see."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from kubernetes_asyncio.client import Configuration
from mcp.client.client import Client

from sandbox_operator.mcp_server.identity import Caller
from sandbox_operator.mcp_server.limits import McpSettings
from sandbox_operator.mcp_server.tools import Clients, Sessions, build_server

TOOLS = {"sandbox_create", "sandbox_list", "sandbox_delete", "run_command", "read_file", "write_file", "list_files"}


def call(name: str, arguments: dict[str, Any], **settings: Any) -> tuple[bool, str]:
    """Call a tool on a server whose Kubernetes client points nowhere: only refusals can succeed."""

    async def go() -> tuple[bool, str]:
        limits = McpSettings(**settings)
        configuration = Configuration(host="http://127.0.0.1:9")  # the discard port: any request would fail
        clients = Clients(limits, configuration, "default", local=True)
        async with Client(build_server(limits, clients)) as client:
            result = await client.call_tool(name, arguments)
        await clients.close()
        text = " ".join(getattr(part, "text", "") for part in result.content)
        return result.is_error, text

    return asyncio.run(go())


def test_the_server_lists_the_seven_tools_with_their_schemas() -> None:
    async def go() -> dict[str, Any]:
        limits = McpSettings()
        clients = Clients(limits, Configuration(), "default", local=True)
        async with Client(build_server(limits, clients)) as client:
            return {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}

    schemas = asyncio.run(go())
    assert set(schemas) == TOOLS
    assert "ctx" not in schemas["run_command"]["properties"]
    assert {"command", "shell", "timeout_seconds", "cwd", "sandbox", "namespace"} <= set(
        schemas["run_command"]["properties"]
    )


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("run_command", {}, "exactly one of `command`"),
        ("run_command", {"command": ["true"], "shell": "true"}, "exactly one of `command`"),
        ("run_command", {"command": []}, "command"),
        ("run_command", {"command": ["sleep", "1"], "timeout_seconds": 601}, "max_command_seconds=600"),
        ("run_command", {"command": ["true"], "timeout_seconds": 0}, "timeout_seconds"),
        ("run_command", {"shell": "x" * 70000}, "shell"),
        ("read_file", {"path": ""}, "path"),
        ("read_file", {"path": "/x", "encoding": "latin-1"}, "encoding"),
        ("write_file", {"path": "/x", "content": "%%%", "encoding": "base64"}, "not valid base64"),
        ("write_file", {"path": "/x"}, "content"),
        ("list_files", {"path": ""}, "path"),
        ("sandbox_create", {"ttl_seconds": 5}, "ttl_seconds"),
        ("sandbox_create", {"idle_timeout_seconds": 86401}, "idle_timeout_seconds"),
        ("sandbox_create", {"image": "x" * 513}, "image"),
        ("sandbox_delete", {}, "name"),
        ("sandbox_list", {"namespace": "n" * 64}, "namespace"),
    ],
)
def test_bad_input_is_refused_naming_the_field(tool: str, arguments: dict[str, Any], message: str) -> None:
    is_error, text = call(tool, arguments)
    assert is_error and message in text, text


def test_a_file_above_the_limit_is_refused_naming_it() -> None:
    content = base64.b64encode(b"x" * 2048).decode()
    is_error, text = call("write_file", {"path": "/tmp/x", "content": content, "encoding": "base64"},
                          max_file_bytes=1024)
    assert is_error and "max_file_bytes=1024" in text


def test_a_session_may_run_only_so_many_calls_at_once() -> None:
    async def go() -> str:
        sessions = Sessions(limit=2)
        async with sessions.slot("s"), sessions.slot("s"):
            async with sessions.slot("other"):
                pass
            with pytest.raises(Exception, match="max_concurrent_calls=2") as refused:
                async with sessions.slot("s"):
                    pass
        async with sessions.slot("s"):  # slots come back when calls end
            pass
        return str(refused.value)

    assert "already runs 2 calls" in asyncio.run(go())


def test_a_callers_identity_survives_the_trip_through_token_claims() -> None:
    caller = Caller("system:serviceaccount:team-a:agent", "uid-1", ("system:serviceaccounts", "team"),
                    {"authentication.kubernetes.io/pod-name": ("agent-0",)})
    back = Caller.from_claims(caller.claims())
    assert back == caller and back.service_account_namespace == "team-a"
    headers = back.impersonation.headers()
    assert ("Impersonate-User", "system:serviceaccount:team-a:agent") in headers
    assert [v for k, v in headers if k == "Impersonate-Group"] == ["system:serviceaccounts", "team"]
    assert not [k for k, _ in headers if k.startswith("Impersonate-Extra")], "extras are not forwarded"


