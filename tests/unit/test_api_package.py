"""Clients (SDK, CLI, MCP server) import the API models without pulling in the operator's runtime."""

from __future__ import annotations

from tests.unit.imports import modules_loaded_by


def test_importing_the_api_loads_neither_kopf_nor_the_async_client() -> None:
    api = ["sandbox_operator.api.connection", "sandbox_operator.api.crd", "sandbox_operator.api.names",
           "sandbox_operator.api.sandbox", "sandbox_operator.api.schema", "sandbox_operator.api.tenant"]
    loaded = modules_loaded_by(api, ("kopf", "kubernetes_asyncio", "kubernetes"))
    assert loaded == [], f"the api package pulled in {','.join(loaded)}"


def test_the_probe_would_see_kopf_if_it_were_imported() -> None:
    assert "kopf" in modules_loaded_by(["sandbox_operator.sandbox.handlers"], ("kopf",))
