"""The pool wiring's bookkeeping: templates as their stream shows them, listings included."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sandbox_operator.api import names as c
from sandbox_operator.k8s import watch
from sandbox_operator.pool import handlers
from sandbox_operator.pool.warm import WARM


def _template(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": c.API_VERSION, "kind": c.TEMPLATE_KIND,
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"image": "busybox", "command": ["sleep", "3600"]}}


def test_templates_follow_their_stream_and_a_listing_drops_what_it_did_not_find() -> None:
    kept, gone = _template("kept", "u1"), _template("gone", "u2")
    try:
        for body in (kept, gone):
            handlers.template_changed(None, body)  # the listing (no loop is running: nothing to wake)
        assert WARM.recipe("ns", "kept") is not None and WARM.recipe("ns", "gone") is not None
        handlers._templates_relisted("ns", {"u1"})  # deleted while the stream was paused: no DELETED event
        assert WARM.recipe("ns", "kept") is not None
        assert WARM.recipe("ns", "gone") is None
        handlers.template_changed("DELETED", _template("kept", "other-uid"))  # an older object of that name
        assert WARM.recipe("ns", "kept") is not None
        handlers.template_changed("DELETED", kept)
        assert WARM.recipe("ns", "kept") is None
    finally:
        WARM.templates.items.clear()


def _pool(name: str, uid: str, version: str = "1", template: str = "shared") -> dict[str, Any]:
    return {"apiVersion": c.API_VERSION, "kind": c.POOL_KIND,
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": version},
            "spec": {"templateRef": {"name": template}, "replicas": 2}}


def test_pools_follow_their_stream_and_a_listing_drops_what_it_did_not_find() -> None:
    """Pools come through the operator's own stream (no loop is running here: nothing is reconciled)."""
    try:
        handlers.pool_changed(None, _pool("kept", "u1"))
        handlers.pool_changed(None, _pool("gone", "u2", template="other"))
        assert set(handlers.POOLS) == {("ns", "kept"), ("ns", "gone")}
        assert WARM.pool_templates[("ns", "gone")] == "other"
        handlers._pools_relisted("ns", {"u1"})  # deleted while the stream was paused: no DELETED event
        assert set(handlers.POOLS) == {("ns", "kept")} and ("ns", "gone") not in WARM.pool_templates
        kept = handlers.POOLS[("ns", "kept")]
        handlers.pool_changed("MODIFIED", _pool("kept", "u1", version="2"))
        assert handlers.POOLS[("ns", "kept")] is kept and kept.version == 2
        handlers.pool_changed("DELETED", _pool("kept", "older-uid"))  # an older object of that name
        assert handlers.POOLS[("ns", "kept")] is kept
        handlers.pool_changed("MODIFIED", _pool("kept", "u3", version="5"))  # replaced while paused
        assert handlers.POOLS[("ns", "kept")] is not kept and kept.deleted
        handlers.pool_changed("DELETED", _pool("kept", "u3", version="6"))
        assert handlers.POOLS == {} and WARM.pool_templates == {}
    finally:
        handlers.POOLS.clear()
        WARM.pool_templates.clear()


def test_a_pool_pass_after_a_relisting_waits_for_its_pods_fences_and_templates_to_be_listed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the stores as they were before a re-listing (a 410) it would make warm pods again that were made meanwhile
    (their names come from generateName: no 409 would say so)."""
    followed = watch.Followed()
    for kind in (watch.PODS, watch.NETWORK_POLICIES, watch.TEMPLATES):
        followed.listen(kind, watch.Listener(wants=lambda body: True, changed=lambda kind, body: None))
    followed.listed.set()  # listed once, then broken: each stream's listing is not current until its next one
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    passes: list[str] = []

    async def reconcile(state: Any, run: Any, *, what: str, trigger: str) -> None:
        passes.append(what)

    monkeypatch.setattr(handlers, "reconcile", reconcile)

    async def scenario() -> None:
        waiting = asyncio.create_task(handlers.reconcile_pool(handlers.PoolState(), None, ("ns", "p"), "listing"))
        for kind in (watch.PODS, watch.NETWORK_POLICIES, watch.TEMPLATES):
            await asyncio.sleep(0.02)
            assert passes == []
            watch._current(kind).set()  # its new listing is in
        await asyncio.wait_for(waiting, 1)
        assert passes == ["pool ns/p"]

    asyncio.run(scenario())
