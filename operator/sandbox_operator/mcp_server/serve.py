"""The two transports: stdio as the local user, streamable HTTP for callers identified by their tokens."""

from __future__ import annotations

import logging

import uvicorn
from kubernetes_asyncio.client import ApiClient
from mcp.server.auth.settings import AuthSettings

from sandbox_operator.api.connection import resolve_environment_once
from sandbox_operator.mcp_server.identity import TokenReviewVerifier
from sandbox_operator.mcp_server.limits import McpSettings
from sandbox_operator.mcp_server.tools import Clients, build_server
from sandbox_operator.sdk import load_configuration

log = logging.getLogger("sandbox_operator.mcp")


async def serve_stdio(settings: McpSettings, kubeconfig: str | None, context: str | None) -> None:
    """Serve one local client over stdin/stdout, acting with the caller's kubeconfig."""
    configuration, namespace = await load_configuration(kubeconfig, context)
    clients = Clients(settings, configuration, namespace, local=True)
    try:
        await build_server(settings, clients).run_stdio_async()
    finally:
        await clients.close()


async def serve_http(settings: McpSettings, kubeconfig: str | None, context: str | None) -> None:
    """Serve streamable HTTP: a request without a valid bearer token gets 401; each caller acts as itself."""
    configuration, namespace = await load_configuration(kubeconfig, context)
    reviewer = ApiClient(configuration)
    resolve_environment_once(reviewer)
    clients = Clients(settings, configuration, "default", local=False)
    verifier = TokenReviewVerifier(reviewer, settings.token_audiences, settings.identity_cache_seconds)
    auth = AuthSettings(
        issuer_url=settings.token_issuer,
        resource_server_url=settings.public_url,
        validate_token_resource=False,  # the TokenReview checks the audiences
    )
    server = build_server(settings, clients, token_verifier=verifier, auth=auth)
    app = server.streamable_http_app(max_request_body_size=settings.max_request_bytes, host=settings.host)
    log.info(
        "MCP over HTTP on %s:%s (server identity from %s)",
        settings.host,
        settings.port,
        kubeconfig or "the in-cluster service account or KUBECONFIG",
    )
    del namespace
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
    try:
        await uvicorn.Server(config).serve()
    finally:
        await clients.close()
        await reviewer.close()
