"""An MCP server backed by Sandboxes: agents run commands and move files in sandboxes as the Kubernetes identity
that called them. ``sandbox-mcp`` (stdio, the caller's kubeconfig) or ``sandbox-mcp --transport http`` (in-cluster:
bearer tokens checked by TokenReview, every call made through impersonation)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from sandbox_operator.mcp_server.limits import McpSettings


def main(argv: list[str] | None = None) -> int:
    """Run the MCP server until it is stopped."""
    parser = argparse.ArgumentParser(prog="sandbox-mcp", description=__doc__)
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    parser.add_argument("--kubeconfig", help="credentials (stdio: the caller's; http: the server's own)")
    parser.add_argument("--context", help="kubeconfig context")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)  # never log request or response bodies
    from sandbox_operator.mcp_server.serve import serve_http, serve_stdio

    settings = McpSettings()
    serve = serve_stdio if args.transport == "stdio" else serve_http
    try:
        asyncio.run(serve(settings, args.kubeconfig, args.context))
    except KeyboardInterrupt:
        return 0
    return 0
