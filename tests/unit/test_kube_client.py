"""Kube's requests, sent over the ApiClient's session without kubernetes_asyncio's call_api (k8s.client): what the
API server receives and what each answer becomes, against a server of the test's own on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration

from sandbox_operator.api import names as c
from sandbox_operator.api.connection import resolve_environment_once
from sandbox_operator.k8s.client import MERGE_PATCH, Kube, KubeError
from tests.unit.loopback import Handler, closed_loopback_port, serving

TOKEN = "test-token-never-logged"


def _kube(host: str) -> Kube:
    configuration = Configuration(host=host)
    configuration.api_key = {"BearerToken": TOKEN}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    api = ApiClient(configuration)
    resolve_environment_once(api)
    api.user_agent = "sandbox-operator"
    return Kube(api)


def _serve(handler: Handler, scenario: Callable[[Kube], Awaitable[Any]]) -> Any:
    """Run ``scenario`` against a loopback server whose every request ``handler`` answers."""

    async def run() -> Any:
        async with serving(handler) as base:
            kube = _kube(base)
            try:
                return await scenario(kube)
            finally:
                await kube.close()

    return asyncio.run(run())


def _manifest() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "ns", "name": "sbx-a"}, "spec": {}}


def test_a_create_sends_the_manifest_as_json_with_the_callers_credentials_and_returns_what_was_stored() -> None:
    seen: list[tuple[str, str, dict[str, str], Any]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.method, request.path_qs, dict(request.headers), body))
        return web.json_response({**body, "metadata": {**body["metadata"], "resourceVersion": "7"}}, status=201)

    stored = _serve(handler, lambda kube: kube.create(c.ChildKind.POD, _manifest()))
    assert stored["metadata"]["resourceVersion"] == "7"
    method, path, headers, body = seen[0]
    assert (method, path, body) == ("POST", "/api/v1/namespaces/ns/pods", _manifest())
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json" and headers["Accept"] == "application/json"
    assert headers["User-Agent"] == "sandbox-operator"  # the API server names our writes after it


def test_a_status_write_is_a_merge_patch_that_clears_the_keys_gone_and_a_query_is_encoded() -> None:
    seen: list[tuple[str, str, str, Any]] = []
    queries: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append((request.method, request.path, request.headers["Content-Type"], body))
        queries.append(dict(request.query))
        return web.json_response({"items": []})

    async def scenario(kube: Kube) -> None:
        await kube.patch_status("ns", "a", {"phase": "Pending", "message": "x"}, {"phase": "Ready"})
        await kube.list_page(c.ChildKind.POD, "ns", label_selector="a=b,c in (d)", continue_token="t/1")

    _serve(handler, scenario)
    assert seen[0] == ("PATCH", f"/apis/{c.GROUP}/{c.VERSION}/namespaces/ns/{c.PLURAL}/a/status", MERGE_PATCH,
                       {"status": {"message": None, "phase": "Ready"}})
    assert seen[1][1] == "/api/v1/namespaces/ns/pods"
    assert queries[1] == {"limit": "500", "labelSelector": "a=b,c in (d)", "continue": "t/1"}


def test_statuses_the_caller_expects_return_none_and_others_raise_with_the_servers_message_redacted() -> None:
    refusal = {"kind": "Status", "status": "Failure", "code": 422,
               "message": 'Pod "sbx-a" is invalid: spec.containers[0].env[0].value: Invalid value: "hunter2": bad'}

    async def handler(request: web.Request) -> web.Response:
        if request.method == "POST":
            return web.json_response({"kind": "Status", "code": 409, "message": "exists"}, status=409)
        if request.method == "PUT":
            return web.json_response(refusal, status=422)
        return web.json_response({"kind": "Status", "code": 404, "message": "not found"}, status=404)

    async def scenario(kube: Kube) -> tuple[Any, Any, KubeError]:
        created = await kube.create(c.ChildKind.POD, _manifest())
        read = await kube.get(c.ChildKind.POD, "ns", "sbx-a")
        policy = {**_manifest(), "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"}
        with pytest.raises(KubeError) as raised:
            await kube.replace(c.ChildKind.NETWORK_POLICY, policy)
        return created, read, raised.value

    created, read, invalid = _serve(handler, scenario)
    assert created is None and read is None  # 409 on create, 404 on get: asked for
    assert isinstance(invalid, KubeError) and invalid.status == 422 and not invalid.transient
    assert "hunter2" not in invalid.message and "spec.containers[0].env[0].value" in invalid.message


def test_a_non_json_refusal_keeps_the_http_reason_and_counts_as_transient() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, text="<html>upstream down</html>")

    async def scenario(kube: Kube) -> KubeError:
        with pytest.raises(KubeError) as raised:
            await kube.delete(c.ChildKind.POD, "ns", "sbx-a")
        return raised.value

    error = _serve(handler, scenario)
    assert (error.status, error.message, error.transient) == (503, "Service Unavailable", True)


def test_an_unreachable_server_and_a_dropped_connection_are_status_0_and_transient() -> None:
    async def refused() -> KubeError:
        kube = _kube(f"http://127.0.0.1:{closed_loopback_port()}")
        try:
            with pytest.raises(KubeError) as raised:
                await kube.get(c.ChildKind.POD, "ns", "sbx-a")
            return raised.value
        finally:
            await kube.close()

    error = asyncio.run(refused())
    assert error.status == 0 and error.transient

    async def drop(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()  # no answer at all: aiohttp's ServerDisconnectedError, not an OSError
        return web.Response()

    async def scenario(kube: Kube) -> KubeError:
        with pytest.raises(KubeError) as raised:
            await kube.create(c.ChildKind.POD, _manifest())
        return raised.value

    dropped = _serve(drop, scenario)
    assert dropped.status == 0 and dropped.transient


def test_a_body_that_is_not_json_is_refused_before_anything_is_sent() -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({})

    async def scenario(kube: Kube) -> None:
        with pytest.raises(TypeError):
            await kube.create(c.ChildKind.POD, {**_manifest(), "spec": {"when": object()}})

    _serve(handler, scenario)
    assert seen == []
