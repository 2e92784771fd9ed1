"""The Tenant wiring's bookkeeping: Tenants and their lifetime rules as their stream shows them, listings included."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox_operator.api.tenant import TenantLifetime
from sandbox_operator.tenant import handlers
from sandbox_operator.tenant.decide import TenantPlan
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


class QuietKube:
    """Nothing exists yet; every write succeeds."""

    async def get(self, kind: str, namespace: str | None, name: str) -> None:
        return None

    async def apply(self, kind: str, manifest: dict[str, Any]) -> None:
        return None

    async def create_object(self, kind: str, manifest: dict[str, Any]) -> None:
        return None

    async def patch_tenant_status(self, name: str, old: Any, new: Any) -> None:
        return None


def test_a_tenant_is_looked_at_again_within_the_resync_period_events_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its objects' events come through Kopf's handlers; one missed must not leave a deleted policy binding unrepaired
    for good."""
    from sandbox_operator.operator import Runtime
    from sandbox_operator.sandbox.defaults import operator_defaults
    from sandbox_operator.settings import Settings

    monkeypatch.setattr(handlers, "_post_event", lambda body, old, new: None)
    state = handlers.TenantState(uid="u1")
    state.remember(_tenant("a", "u1", "ns-a"))
    runtime = Runtime(kube=QuietKube(), defaults=operator_defaults(Settings()))  # type: ignore[arg-type]
    resync = timedelta(seconds=handlers.RESYNC_SECONDS)
    result = asyncio.run(handlers._pass(state, runtime))  # a new Tenant: its plan looks again sooner
    assert result.failed is None and result.requeue_at is not None
    assert result.requeue_at < datetime.now(UTC) + resync / 2
    settled = TenantPlan(actions=(), status=(state.body or {}).get("status") or {})
    monkeypatch.setattr(handlers, "decide_tenant_safely", lambda body, decide, now: (settled, None))
    before = datetime.now(UTC)
    result = asyncio.run(handlers._pass(state, runtime))  # nothing to do, nowhere to look again: the resync
    assert result.requeue_at is not None
    assert before + resync <= result.requeue_at <= datetime.now(UTC) + resync


def test_a_change_of_a_tenants_lifetime_rules_wakes_its_namespaces_sandboxes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Their deadlines follow at once (a lowered maximum is enforced now, not at each Sandbox's next event); a status
    change of the Tenant, or the start-up listing (every Sandbox's first pass follows it), wakes nothing."""
    from sandbox_operator.k8s import watch

    monkeypatch.setattr(watch, "FOLLOWED", watch.Followed())
    changed: list[str] = []
    monkeypatch.setattr(handlers, "LIFETIME_LISTENERS", [changed.append])
    try:
        handlers.tenant_changed(None, _tenant("a", "u1", "ns-a"))
        assert changed == []
        watch.FOLLOWED.listed.set()
        with_status = _tenant("a", "u1", "ns-a", version="2") | {"status": {"phase": "Ready"}}
        handlers.tenant_changed("MODIFIED", with_status)
        assert changed == []
        handlers.tenant_changed("MODIFIED", _tenant("a", "u1", "ns-a", version="3", ttl=60))
        assert changed == ["ns-a"]
    finally:
        handlers.TENANTS.clear()
        handlers.TENANT_LIFETIMES.items.clear()
