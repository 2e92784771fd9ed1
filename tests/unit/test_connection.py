"""The clients' HTTP sessions read the proxy environment once, not on every request (api.connection)."""

from __future__ import annotations

import asyncio
import base64
import inspect

import aiohttp
import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration

from sandbox_operator.api.connection import resolve_environment_once
from tests.unit.loopback import closed_loopback_port


def test_aiohttp_looks_at_the_environment_per_request_only_while_its_session_trusts_it() -> None:
    """Pins what ``resolve_environment_once`` relies on: the flag it clears is the one each request consults."""
    source = inspect.getsource(aiohttp.ClientSession._request)
    assert "self._trust_env" in source and "get_env_proxy_for_url" in source and "_get_netrc_auth" in source
    assert "proxy_auth = self._default_proxy_auth" in source  # the environment's proxy credentials go there

    async def flag() -> bool:
        async with aiohttp.ClientSession(trust_env=True) as session:
            return bool(session._trust_env)

    assert asyncio.run(flag()) is True


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variable of the machine's (lowercase ones win over uppercase in urllib)."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "ws_proxy", "wss_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def _client(host: str, proxy: str | None = None) -> ApiClient:
    configuration = Configuration(host=host)
    configuration.proxy = proxy
    return ApiClient(configuration)


@pytest.mark.parametrize(("no_proxy", "configured", "expected"), [
    ("", None, "http://proxy.test:3128"),
    ("api.test", None, None),  # NO_PROXY names the API server
    ("", "http://configured.test:8080", "http://configured.test:8080"),  # a kubeconfig's proxy-url stays
])
def test_the_environments_proxy_is_taken_once_as_aiohttp_would_take_it(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, configured: str | None, expected: str | None,
) -> None:
    _clean_environment(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)

    async def scenario() -> None:
        api = _client("https://api.test:6443", configured)
        try:
            resolve_environment_once(api)
            assert api.rest_client.proxy == expected
            assert api.rest_client.pool_manager._trust_env is False
            auth = api.rest_client.pool_manager._default_proxy_auth
            if expected == "http://proxy.test:3128":
                assert auth is not None and auth.encode() == "Basic " + base64.b64encode(b"user:secret").decode()
            else:
                assert auth is None
        finally:
            await api.close()

    asyncio.run(scenario())


def test_after_it_a_request_neither_reads_the_environment_nor_hops_to_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request to a server of the test's own on loopback: once resolved, aiohttp's per-request lookups are never
    called (any proxy named is a closed loopback port: nothing leaves the machine either way)."""
    _clean_environment(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_loopback_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    looked: list[str] = []

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"major": "1"})

    async def scenario() -> object:
        app = web.Application()
        app.router.add_get("/version", version)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        api = _client(f"http://127.0.0.1:{port}")
        try:
            resolve_environment_once(api)
            assert api.rest_client.proxy is None  # NO_PROXY names the server
            monkeypatch.setattr(aiohttp.client, "get_env_proxy_for_url", lambda url: looked.append("proxy"))
            monkeypatch.setattr(aiohttp.ClientSession, "_get_netrc_auth", lambda self, host: looked.append("netrc"))
            return await api.call_api("/version", "GET", response_types_map={200: "object"},
                                      _return_http_data_only=True)
        finally:
            await api.close()
            await runner.cleanup()

    assert asyncio.run(scenario()) == {"major": "1"}
    assert looked == []
