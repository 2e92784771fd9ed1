"""The Tenant wiring's bookkeeping: Tenants and their lifetime rules as their stream shows them, listings included."""

from __future__ import annotations

import copy
from typing import Any

from sandbox_operator.api.tenant import TenantLifetime
from sandbox_operator.tenant import handlers
from tests.unit.tenant_builders import tenant_body


def _tenant(name: str, uid: str, namespace: str, version: str = "1", ttl: int = 3600) -> dict[str, Any]:
    body = copy.deepcopy(tenant_body({"namespace": namespace, "defaults": {"ttlSeconds": ttl}}))
    body["metadata"].update(name=name, uid=uid, resourceVersion=version)
    return body


def test_tenants_follow_their_stream_and_a_listing_drops_what_it_did_not_find() -> None:
    """No loop is running here: nothing is reconciled, only remembered."""
    try:
        handlers.tenant_changed(None, _tenant("a", "u1", "ns-a"))
        handlers.tenant_changed(None, _tenant("b", "u2", "ns-b", ttl=60))
        assert handlers.TENANT_LIFETIMES.get("ns-b") == TenantLifetime(60, 86400)
        handlers._tenants_relisted(None, {"u1"})  # b deleted while the stream was paused: no DELETED event
        assert set(handlers.TENANTS) == {"a"} and handlers.TENANT_LIFETIMES.get("ns-b") is None
        handlers.tenant_changed("MODIFIED", _tenant("a", "u1", "ns-a", version="2", ttl=120))
        assert handlers.TENANT_LIFETIMES.get("ns-a") == TenantLifetime(120, 86400)
        kept = handlers.TENANTS["a"]
        handlers.tenant_changed("DELETED", _tenant("a", "older-uid", "ns-a"))  # an older object of that name
        assert handlers.TENANTS["a"] is kept and handlers.TENANT_LIFETIMES.get("ns-a") is not None
        handlers.tenant_changed("DELETED", _tenant("a", "u1", "ns-a", version="3"))
        assert handlers.TENANTS == {} and handlers.TENANT_LIFETIMES.get("ns-a") is None and kept.deleted
    finally:
        handlers.TENANTS.clear()
        handlers.TENANT_LIFETIMES.items.clear()
