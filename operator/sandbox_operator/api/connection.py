"""How this project's programs (operator, SDK, MCP server) use a kubernetes_asyncio client's HTTP session.

kubernetes_asyncio opens its aiohttp session with ``trust_env=True``. aiohttp then looks at the environment on every
request: it reads ``~/.netrc`` for the API server's host and the proxy variables for its URL, each in a thread of
the default executor. That is two thread hops per request, and a queue behind the executor's few threads in a burst:
without them the operator's CPU per 100 Sandboxes went from 0.91 to 0.67 s, and create->Ready p50 from 0.29 to
0.19 s (bench/fleet.py). The proxy settings do not change while a process runs, so they are read once here, as
aiohttp would read them, and the session stops looking.

Only for plain requests: kubernetes_asyncio opens WebSockets (exec) without its proxy setting, so a WebSocket client
keeps its session's own reading of the environment.

Imports aiohttp only when called: the ``api`` package stays importable without a Kubernetes client.
"""

from __future__ import annotations

from typing import Any


def resolve_environment_once(api_client: Any) -> None:
    """Give ``api_client`` (a kubernetes_asyncio ``ApiClient`` not used yet) the proxy the environment names for its
    API server, if any and none is configured, and stop its session reading the environment on each request.

    The API server's own credentials never come from ``~/.netrc``: a kubeconfig or a service account carries them.
    """
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    rest = api_client.rest_client
    session = rest.pool_manager
    if not getattr(session, "_trust_env", False):
        return
    if not rest.proxy:
        try:
            proxy, proxy_auth = get_env_proxy_for_url(URL(api_client.configuration.host))
        except LookupError:  # no proxy for this host, or NO_PROXY names it
            proxy, proxy_auth = None, None
        if proxy is not None:
            rest.proxy = str(proxy)
            # As aiohttp passes the environment's credentials: for plain HTTP and CONNECT alike.
            session._default_proxy_auth = proxy_auth
    session._trust_env = False  # aiohttp has no public setter; both pinned in tests/unit/test_connection.py
