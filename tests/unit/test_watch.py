"""The operator's own streams of the kinds it only reads (k8s.watch), and what they rely on from Kopf."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

import kopf
import pytest
from aiohttp import web
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import auth, fetching, watching
from kopf._cogs.structs import credentials

from sandbox_operator.k8s import loop, watch
from sandbox_operator.k8s.cache import Store
from sandbox_operator.pool.decide import WarmPod
from sandbox_operator.pool.warm import Warm
from tests.unit.loopback import Handler, serving


def test_kopf_watchers_enter_the_pause_block_by_its_module_name_with_their_pause_toggles() -> None:
    """Pinned Kopf behaviour: every Kopf watcher goes through ``watching.streaming_block`` (looked up in the module at
    call time, so the wrapper sees it) with the operator's pause toggles; a listing ends with ``Bookmark.LISTED``."""
    source = inspect.getsource(watching.infinite_watch)
    assert "async with streaming_block(" in source and "operator_paused=operator_paused" in source
    assert "operator_paused" in inspect.signature(watching.infinite_watch).parameters
    assert "yield Bookmark.LISTED" in inspect.getsource(watching.continuous_watch)
    assert getattr(watching.streaming_block, "captures_pause", False)


def test_kopf_posts_events_to_the_queue_its_context_variables_name() -> None:
    """Pinned Kopf behaviour: ``kopf.event`` finds its queue in two context variables; Kopf starts its poster with
    that queue by the module's name (so the wrapper sees it)."""
    from kopf._core.engines import posting
    from kopf._core.reactor import running

    source = inspect.getsource(posting.enqueue)
    assert "event_queue_loop_var.get()" in source and "event_queue_var.get()" in source
    assert "coro=posting.poster(" in inspect.getsource(running.spawn_tasks)
    assert getattr(posting.poster, "captures_queue", False)


def test_the_streams_post_events_to_the_queue_kopf_starts_its_poster_with(monkeypatch: pytest.MonkeyPatch) -> None:
    from kopf._core.engines import posting

    followed = watch.Followed()
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    posted: list[bool] = []

    async def infinite_watch(**_: Any) -> AsyncIterator[Any]:
        yield {"type": "ADDED", "object": _pod("a", "ua")}

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)

    async def scenario() -> None:
        queue: posting.K8sEventQueue = asyncio.Queue()
        poster = asyncio.create_task(posting.poster(event_queue=queue, backbone=None, settings=None))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        poster.cancel()
        assert followed.posting is not None and followed.posting[1] is queue

        async def wake() -> None:
            posted.append(posting.event_queue_var.get() is queue)

        tasks: list[asyncio.Task[None]] = []
        followed.listen(watch.PODS, watch.Listener(
            wants=lambda body: True, changed=lambda kind, body: tasks.append(asyncio.create_task(wake()))))
        await watch._stream(watch.PODS, None, settings=None)  # type: ignore[arg-type]
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert posted == [True]


def test_the_pause_toggles_are_read_from_the_first_watcher_and_a_paused_operator_defers_its_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While paused no pass runs and none is retried on a timer; when the replica resumes, each kind passes over its
    objects (``on_resume``), which runs what was due meanwhile."""
    followed = watch.Followed()
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    passes: list[str] = []

    async def scenario() -> None:
        toggles = aiotoggles.ToggleSet(any)
        blocker = await toggles.make_toggle(False, name="a higher-priority peer")
        async with watching.streaming_block(resource=watch.PODS.resource(), namespace=None,
                                            operator_paused=toggles):
            pass
        assert followed.pause is toggles and not watch.paused()
        follower = asyncio.create_task(watch._follow_pause())

        async def one_pass() -> loop.PassResult:
            passes.append("pass")
            return loop.PassResult()

        state = loop.ObjectState()
        followed.on_resume(lambda: watch.spawn(loop.reconcile(state, one_pass, what="x", trigger="resumed")))
        await blocker.turn_to(True)
        await loop.reconcile(state, one_pass, what="x", trigger="timer")
        assert watch.paused() and passes == [] and state.dirty
        await asyncio.sleep(0.1)
        assert passes == [] and state.wakeup is None, "a paused replica polls nothing"
        await blocker.turn_to(False)
        await asyncio.sleep(0.05)  # the resume gives the object its pass
        assert passes == ["pass"]

        async def paused_meanwhile() -> loop.PassResult:  # a trigger folds into the pass, then the replica pauses
            passes.append("running")
            state.dirty = True
            await blocker.turn_to(True)
            return loop.PassResult()

        await loop.reconcile(state, paused_meanwhile, what="x", trigger="pod")
        assert passes == ["pass", "running"] and state.dirty, "the folded trigger waits for the resume, not dropped"
        await blocker.turn_to(False)
        await asyncio.sleep(0.05)
        assert passes == ["pass", "running", "pass"]
        follower.cancel()

    asyncio.run(scenario())


def test_a_replica_leaving_the_peering_stops_its_passes_before_its_record_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinned Kopf behaviour: on its way out Kopf's keep-alive withdraws the replica with ``touch(lifetime=0)`` (looked
    up in the module at call time), while the operator's own tasks still run. The wrapper makes the replica count as
    paused first, and lets the passes it started end (up to a grace), so the standby that resumes next is alone."""
    from kopf._core.engines import peering

    source = inspect.getsource(peering.keepalive)
    assert "finally:" in source and "await asyncio.shield(touch(" in source and "lifetime=0," in source
    assert getattr(peering.touch, "stops_passes", False)
    followed = watch.Followed()
    followed.pause = aiotoggles.ToggleSet(any)
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    order: list[str] = []

    async def original(**kwargs: Any) -> None:
        order.append(f"touch lifetime={kwargs['lifetime']} paused={watch.paused()}")

    monkeypatch.setattr(peering, "touch", original)
    watch._withdraw_quietly()  # the wrapper around a fake original, as at import around Kopf's
    assert peering.touch.__wrapped__ is original

    async def scenario() -> None:
        async def a_pass() -> None:
            await asyncio.sleep(0.05)
            order.append("pass ended")

        watch.spawn(a_pass())
        follower = asyncio.create_task(watch._follow_pause())
        followed.pause_found.set()
        await peering.touch(identity="me", settings=None, resource=None, namespace=None)
        assert order == ["touch lifetime=None paused=False"] and not watch.paused()
        await peering.touch(identity="me", settings=None, resource=None, namespace=None, lifetime=0)
        assert order[1:] == ["pass ended", "touch lifetime=0 paused=True"]
        assert watch.put_off()  # a pass put off now is not resumed: the replica is going
        await asyncio.sleep(0.01)
        assert follower.done()

    asyncio.run(scenario())


def test_the_streams_do_not_pause_with_kopf_so_a_takeover_lists_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A standby keeps its stores current: its streams are Kopf's list+watch without the pause toggles, which Kopf
    reads as "never paused" (pinned: ``streaming_block`` waits only for toggles it is given)."""
    original = watching.streaming_block.__wrapped__  # type: ignore[attr-defined]
    assert "if operator_paused is not None and operator_paused.is_on():" in inspect.getsource(original)
    followed = watch.Followed()
    followed.pause = aiotoggles.ToggleSet(any)
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    given_toggles: list[Any] = []

    async def infinite_watch(*, operator_paused: Any = None, **_: Any) -> AsyncIterator[Any]:
        given_toggles.append(operator_paused)
        yield {"type": "ADDED", "object": _pod("a", "ua")}

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)
    followed.listen(watch.PODS, watch.Listener(wants=lambda body: True, changed=lambda kind, body: None))
    asyncio.run(watch._stream(watch.PODS, None, settings=None))  # type: ignore[arg-type]
    assert given_toggles == [None]


def _pod(name: str, uid: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid}}


def test_a_stream_sends_every_event_in_order_and_trims_to_each_new_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing (events of type None, then LISTED), the watch, then a re-listing (after a pause or a 410) that no
    longer has a pod: the listeners see every event in order, are told each listing's uids, and the operator counts
    as listed after the first."""
    followed = watch.Followed()
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    script: list[Any] = [
        {"type": None, "object": _pod("a", "ua")}, {"type": None, "object": _pod("b", "ub")}, watching.Bookmark.LISTED,
        {"type": "MODIFIED", "object": _pod("a", "ua")}, {"type": "BOOKMARK", "object": {"metadata": {}}},
        {"type": None, "object": _pod("a", "ua")}, watching.Bookmark.LISTED,
        watching.Bookmark.LISTED,  # an empty re-listing
    ]

    async def infinite_watch(**_: Any) -> AsyncIterator[Any]:
        for item in script:
            yield item

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)
    seen: list[tuple[str | None, str]] = []
    listings: list[set[str]] = []
    followed.listen(watch.PODS, watch.Listener(
        wants=lambda body: True,
        changed=lambda kind, body: seen.append((kind, body["metadata"]["name"])),
        relisted=lambda namespace, uids: listings.append(set(uids)),
    ))
    followed.listen(watch.PODS, watch.Listener(wants=lambda body: False, changed=lambda kind, body: seen.append(
        ("never", ""))))
    followed.pending = {(watch.PODS, None)}

    async def scenario() -> None:
        await watch._stream(watch.PODS, None, settings=None)  # type: ignore[arg-type]
        assert followed.listed.is_set()
        await watch.wait_listed()

    asyncio.run(scenario())
    assert seen == [(None, "a"), (None, "b"), ("MODIFIED", "a"), (None, "a")]
    assert listings == [{"ua", "ub"}, {"ua"}, set()]


def test_a_store_keeps_only_what_a_listing_found_in_its_scope() -> None:
    store: Store[tuple[str, str], int] = Store()
    store.put(("ns", "a"), "ua", 1)
    store.put(("ns", "b"), "ub", 2)
    store.put(("other", "c"), "uc", 3)
    assert store.retain({"ua"}, lambda key: key[0] == "ns") == [("ns", "b")]
    assert store.get(("ns", "a")) == 1 and store.get(("ns", "b")) is None and store.get(("other", "c")) == 3


def test_a_pool_keeps_only_the_warm_pods_a_listing_found() -> None:
    warm = Warm()

    def pod(name: str) -> WarmPod:
        return WarmPod(name=name, recipe_hash="h", ready=True, resource_version="1")

    warm.put_member(("ns", "p"), "u1", pod("p-1"))
    warm.put_member(("ns", "p"), "u2", pod("p-2"))
    warm.put_member(("ns", "q"), "u3", pod("q-1"))
    assert warm.retain({"u1", "u3"}, lambda key: True) == [("ns", "p")]
    assert [p.name for p in warm.pods(("ns", "p"))] == ["p-1"]
    assert warm.retain(set(), lambda key: key[1] == "q") == [("ns", "q")]
    assert ("ns", "q") not in warm.members


def test_the_operator_watches_sandboxes_pools_tenants_and_every_child_kind_by_its_own_streams() -> None:
    import sandbox_operator.pool.handlers
    import sandbox_operator.sandbox.handlers
    import sandbox_operator.tenant.handlers  # noqa: F401

    plurals = {kind.plural for kind in watch.FOLLOWED.listeners}
    assert plurals == {"sandboxes", "sandboxtemplates", "sandboxpools", "tenants", "pods", "services",
                       "persistentvolumeclaims", "networkpolicies"}
    assert [kind.plural for kind in watch.FOLLOWED.listeners if not kind.namespaced] == ["tenants"]
    listeners: Mapping[watch.Kind, list[watch.Listener]] = watch.FOLLOWED.listeners
    # Pods: Sandboxes' and pools'. NetworkPolicies: Sandboxes', the namespace fences, pools' fences, Tenants'.
    assert len(listeners[watch.PODS]) == 2 and len(listeners[watch.NETWORK_POLICIES]) == 4


def test_a_child_listed_at_start_up_does_not_wake_its_sandbox_but_one_listed_later_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before the start-up gate opens, every Sandbox's pass is queued behind it and will see its children: the
    children's own listing events only fill the stores. After it (a re-listing, or the watch) they wake."""
    from sandbox_operator.api import names as c
    from sandbox_operator.sandbox import handlers

    followed = watch.Followed()
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    monkeypatch.setattr(handlers, "WATCHED", handlers.Watched())
    woken: list[tuple[tuple[str, str], str]] = []
    monkeypatch.setattr(handlers, "_wake", lambda key, trigger: woken.append((key, trigger)))
    listener = handlers._child_listener(c.ChildKind.NETWORK_POLICY, "networkpolicy")

    def policy(uid: str, note: str) -> dict[str, Any]:
        return {"metadata": {"name": "sbx-a", "namespace": "ns", "uid": uid, "annotations": {"note": note},
                             "labels": {c.LABEL_SANDBOX: "a", c.LABEL_MANAGED_BY: c.MANAGED_BY}},
                "spec": {"podSelector": {}}}

    listener.changed(None, policy("u1", "x"))
    assert woken == [] and handlers.WATCHED.children[c.ChildKind.NETWORK_POLICY].get(("ns", "a")) is not None
    followed.listed.set()
    listener.changed("MODIFIED", policy("u1", "x"))  # nothing it compares moved
    assert woken == []
    listener.changed(None, policy("u2", "x"))  # a re-listing finds another object
    listener.changed("DELETED", policy("u2", "x"))
    assert woken == [(("ns", "a"), "networkpolicy"), (("ns", "a"), "networkpolicy")]


def test_an_event_or_a_listing_a_listener_cannot_handle_stops_neither_the_stream_nor_the_gate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    followed = watch.Followed()
    monkeypatch.setattr(watch, "FOLLOWED", followed)

    async def infinite_watch(**_: Any) -> AsyncIterator[Any]:
        yield {"type": None, "object": _pod("bad", "u1")}
        yield watching.Bookmark.LISTED
        yield {"type": "ADDED", "object": _pod("good", "u2")}

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)
    seen: list[str] = []

    def changed(kind: str | None, body: Mapping[str, Any]) -> None:
        if body["metadata"]["name"] == "bad":
            raise KeyError("spec")
        seen.append(body["metadata"]["name"])

    def relisted(namespace: str | None, uids: set[str]) -> None:
        raise ValueError(namespace)

    followed.listen(watch.PODS, watch.Listener(wants=lambda body: True, changed=changed, relisted=relisted))
    followed.pending = {(watch.PODS, None)}
    asyncio.run(watch._stream(watch.PODS, None, settings=None))  # type: ignore[arg-type]
    assert seen == ["good"]
    assert followed.listed.is_set(), "a listing a listener could not handle still opens the gate"


def _sandbox_handlers(monkeypatch: pytest.MonkeyPatch, followed: watch.Followed, workers: int) -> Any:
    """The Sandbox handlers on ``followed``, with empty tables, a runtime and ``workers`` listed-pass workers."""
    from sandbox_operator.sandbox import handlers

    monkeypatch.setattr(watch, "FOLLOWED", followed)
    monkeypatch.setattr(handlers, "WATCHED", handlers.Watched())
    monkeypatch.setattr(handlers, "RUNTIME", [object()])
    monkeypatch.setattr(handlers, "LISTED", handlers.ListedPasses(workers=workers))
    return handlers


def test_a_sandbox_never_served_is_served_before_every_kind_is_listed_and_once_more_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At a start, Sandboxes that had their status wait for every kind's listing (a pass must see the children), and
    are then confirmed by a few workers. One never served (listed, or created meanwhile) is served as soon as the
    Tenants are listed (its creates read first or read what a 409 finds), each of its passes until the gate opens, and
    once more after it, which sees every child."""
    followed = watch.Followed()
    followed.listen(watch.TENANTS, watch.Listener(wants=lambda body: True, changed=lambda kind, body: None))
    handlers = _sandbox_handlers(monkeypatch, followed, workers=2)
    passes: list[tuple[str, str]] = []

    async def reconcile(state: Any, run: Any, *, what: str, trigger: str) -> None:
        passes.append((what.rsplit("/", 1)[1], trigger))

    monkeypatch.setattr(handlers, "reconcile", reconcile)

    def sandbox(name: str, served: bool, version: str = "1") -> dict[str, Any]:
        status = {"conditions": [{"type": "Ready", "status": "True"}], "phase": "Running"} if served else {}
        return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", "resourceVersion": version},
                "spec": {}, "status": status}

    async def scenario() -> None:
        for name in ("old-1", "old-2", "old-3"):
            handlers.sandbox_changed(None, sandbox(name, served=True))
        handlers.sandbox_changed(None, sandbox("listed", served=False))
        handlers.sandbox_changed("ADDED", sandbox("added", served=False))
        templated = sandbox("templated", served=False) | {"spec": {"templateRef": {"name": "t"}}}
        handlers.sandbox_changed("ADDED", templated)  # its claim needs the pools listed: it waits
        await asyncio.sleep(0.05)
        assert passes == []  # not before its Tenant's lifetime rules are known
        followed.current.setdefault(watch.TENANTS, asyncio.Event()).set()
        await asyncio.sleep(0.05)
        assert sorted(passes) == [("added", "sandbox"), ("listed", "listing")]
        handlers._wake(("ns", "listed"), "pod")  # its pod's event, the gate still closed
        await asyncio.sleep(0.05)
        assert passes[-1] == ("listed", "pod")
        handlers.sandbox_changed("MODIFIED", sandbox("added", served=False, version="2"))
        await asyncio.sleep(0.05)
        assert passes[-1] == ("added", "sandbox")
        passes.clear()
        followed.listed.set()
        await asyncio.sleep(0.05)
        assert sorted(passes) == [("added", "listing"), ("listed", "listing"), ("old-1", "listing"),
                                  ("old-2", "listing"), ("old-3", "listing"), ("templated", "sandbox")]
        assert handlers.LISTED.running == 0 and not handlers.LISTED.queue  # two workers took three, and ended

    asyncio.run(scenario())


def test_a_kind_counts_as_listed_while_every_scope_of_it_has_a_current_listing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At a start, until each of its streams has listed; after a pause (a takeover) or a 410, until it has listed
    again; a kind nobody follows is not waited for."""
    followed = watch.Followed()
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    for kind in (watch.TENANTS, watch.PODS):
        followed.listen(kind, watch.Listener(wants=lambda body: True, changed=lambda kind, body: None))
    followed.pending = {(watch.TENANTS, None), (watch.PODS, "a"), (watch.PODS, "b")}
    followed.unlisted = set(followed.pending)

    async def infinite_watch(**_: Any) -> AsyncIterator[Any]:
        yield watching.Bookmark.LISTED

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)

    async def scenario() -> None:
        await asyncio.wait_for(watch.wait_kind_listed(watch.SERVICES), 1)
        tenants = asyncio.create_task(watch.wait_kind_listed(watch.TENANTS))
        pods = asyncio.create_task(watch.wait_kind_listed(watch.PODS))
        await asyncio.sleep(0.01)
        assert not tenants.done() and not pods.done()
        await watch._stream(watch.TENANTS, None, settings=None)  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert tenants.done() and not pods.done() and not followed.listed.is_set()
        await watch._stream(watch.PODS, "a", settings=None)  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert not pods.done()
        await watch._stream(watch.PODS, "b", settings=None)  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert pods.done() and followed.listed.is_set()

        toggles = aiotoggles.ToggleSet(any)
        async with watching.streaming_block(resource=watch.TENANTS.resource(), namespace=None,
                                            operator_paused=toggles):
            await asyncio.wait_for(watch.wait_kind_listed(watch.TENANTS), 1)  # streaming, listing current
        # Left the block (paused, or a 410): Sandbox passes wait for the next listing, though the gate stays open.
        again = asyncio.create_task(watch.wait_kind_listed(watch.TENANTS))
        await asyncio.sleep(0.01)
        assert not again.done() and followed.listed.is_set()
        await asyncio.wait_for(watch.wait_kind_listed(watch.PODS), 1)  # the other kinds' listings still count
        await watch._stream(watch.TENANTS, None, settings=None)  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert again.done()

    asyncio.run(scenario())


def test_after_its_first_listing_a_kind_whose_stream_stays_broken_holds_a_pass_only_so_long(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    followed = watch.Followed()
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    monkeypatch.setattr(watch, "CURRENT_WAIT_SECONDS", 0.05)
    followed.listen(watch.TENANTS, watch.Listener(wants=lambda body: True, changed=lambda kind, body: None))
    followed.pending = {(watch.TENANTS, None)}
    followed.unlisted = set(followed.pending)

    async def scenario() -> None:
        first = asyncio.create_task(watch.wait_kind_listed(watch.TENANTS))
        await asyncio.sleep(0.2)
        assert not first.done(), "its first listing is waited for, however long"
        followed.pending.clear()  # the first listing came
        watch._current(watch.TENANTS).set()
        await asyncio.wait_for(first, 1)
        watch._current(watch.TENANTS).clear()  # broken since (a 410, an error), and not listed again
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                await asyncio.wait_for(watch.wait_kind_listed(watch.TENANTS), 1)
        assert followed.overdue == {watch.TENANTS}
        assert caplog.text.count("tenants have not been listed again") == 1

    asyncio.run(scenario())


def test_a_standby_that_resumes_serves_the_waiting_sandboxes_first_and_confirms_each_other_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A standby listed everything while paused, and ran no pass: when it resumes, a Sandbox never served and one past
    its deadline get a pass at once; every other one is confirmed by the few workers, once, though the listing had
    queued it already."""
    followed = watch.Followed()
    followed.listed.set()
    followed.pause = aiotoggles.ToggleSet(any)
    handlers = _sandbox_handlers(monkeypatch, followed, workers=1)
    followed.on_resume(handlers._resumed)  # as at import, on the process's own
    passes: list[tuple[str, str]] = []

    async def reconcile(state: Any, run: Any, *, what: str, trigger: str) -> None:
        if watch.put_off():
            return
        passes.append((what.rsplit("/", 1)[1], trigger))
        await asyncio.sleep(0)

    monkeypatch.setattr(handlers, "reconcile", reconcile)

    def sandbox(name: str, status: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", "resourceVersion": "1"},
                "spec": {}, "status": status}

    ready = {"conditions": [{"type": "Ready", "status": "True"}], "phase": "Running"}

    async def scenario() -> None:
        blocker = await followed.pause.make_toggle(True, name="the active replica")
        follower = asyncio.create_task(watch._follow_pause())
        followed.pause_found.set()
        for index in range(3):  # the later in the listing, the nearer its deadline
            deadline = {"expiresAt": f"209{3 - index}-01-01T00:00:00Z"}
            handlers.sandbox_changed(None, sandbox(f"old-{index}", ready | deadline))
        handlers.sandbox_changed(None, sandbox("no-deadline", ready))
        handlers.sandbox_changed(None, sandbox("expired", ready | {"expiresAt": "2020-01-01T00:00:00Z"}))
        handlers.sandbox_changed("ADDED", sandbox("new", {}))
        await asyncio.sleep(0.05)
        assert passes == [] and followed.deferred.is_set()
        await blocker.turn_to(False)
        await asyncio.sleep(0.05)
        assert sorted(passes[:2]) == [("expired", "resumed"), ("new", "resumed")]
        assert passes[2:] == [("old-2", "listing"), ("old-1", "listing"), ("old-0", "listing"),
                              ("no-deadline", "listing")], "the nearest deadlines first"
        assert all(handlers.WATCHED.sandboxes[("ns", name)].listed for name in ("old-0", "new")), \
            "seen while standing by: another replica may have made its children"
        follower.cancel()

    asyncio.run(scenario())


def test_the_listed_sandboxes_passes_let_other_work_in_between(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass that writes nothing never suspends: the workers confirming thousands of listed Sandboxes must still
    yield between them, or a new Sandbox's pass (and every API response) waits for the whole queue."""
    from sandbox_operator.sandbox import handlers

    followed = watch.Followed()
    followed.listed.set()
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    monkeypatch.setattr(handlers, "RUNTIME", [object()])
    listed = handlers.ListedPasses(workers=1)
    order: list[str] = []

    async def reconcile(state: Any, run: Any, *, what: str, trigger: str) -> None:
        order.append("pass")  # returns without suspending, as a pass that finds nothing to do

    monkeypatch.setattr(handlers, "reconcile", reconcile)

    async def other() -> None:
        await asyncio.sleep(0)
        order.append("other")

    async def scenario() -> None:
        for index in range(100):
            listed.put(handlers.SandboxState(uid=str(index)), ("ns", f"s{index}"))
        waiting = asyncio.get_running_loop().create_task(other())
        await asyncio.sleep(0.05)
        await waiting

    asyncio.run(scenario())
    assert order.count("pass") == 100 and order.index("other") < 5, order[:10]


def test_kopf_reads_every_get_the_one_way_the_operator_replaces() -> None:
    """Pinned Kopf behaviour: its GETs (the listings' pages among them) go through ``api.get``, looked up in the module
    at call time, which sends ``api.request`` and parses ``response.json()``; the operator's ``get`` does the same with
    a faster parser (k8s.watch._parse_faster). A Kopf that reads them otherwise fails here."""
    from kopf._cogs.clients import api, fetching

    original = api.get.__wrapped__
    assert getattr(api.get, "parses_faster", False)
    source = inspect.getsource(original)
    assert "await request(" in source and "method='get'" in source and "return await response.json()" in source
    assert list(inspect.signature(original).parameters) == list(inspect.signature(api.get).parameters)
    assert "api.get(" in inspect.getsource(fetching.fetch_objs)


Listing = Callable[[], AsyncIterator[tuple[Collection[Any], str]]]


@contextlib.asynccontextmanager
async def kopf_against(handler: Handler, *, chunk_size: int, labels: str = "") -> AsyncIterator[Listing]:
    """Kopf's API calls in this task go to a loopback server that ``handler`` answers; yields a listing of the pods
    of namespace ``ns`` through Kopf's own ``fetching.fetch_objs``, a page of ``chunk_size`` at a time."""
    settings = kopf.OperatorSettings()
    settings.watching.chunk_size = chunk_size
    if labels:
        settings.watching.label_selectors["pods"] = labels
    async with serving(handler) as base:
        vault = credentials.Vault({"loopback": credentials.ConnectionInfo(server=base)})
        auth.vault_var.set(vault)
        try:
            yield lambda: fetching.fetch_objs(settings=settings, resource=watch.PODS.resource(), namespace="ns",
                                              logger=logging.getLogger("test"))
        finally:
            await vault.close()


def test_a_listings_next_page_is_asked_for_while_the_operator_takes_in_the_one_it_has() -> None:
    """Through Kopf's own chunked listing (``fetching.fetch_objs``) against a loopback server: every page once, in
    order, with the same query, and the next one on its way while the listeners take in the one before."""
    pages = {"": ("t1", ["a", "b"]), "t1": ("t/2=", ["c", "d"]), "t/2=": ("", ["e"])}
    asked: list[tuple[dict[str, str], float]] = []

    async def handler(request: web.Request) -> web.Response:
        asked.append((dict(request.query), time.monotonic()))
        await asyncio.sleep(0.1)  # the API server's time for a page
        following, names = pages[request.query.get("continue", "")]
        return web.json_response({"kind": "PodList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": "9", "continue": following},
                                  "items": [{"metadata": {"name": name}} for name in names]})

    async def scenario() -> list[tuple[list[str], float]]:
        taken = []
        async with kopf_against(handler, chunk_size=2, labels="app=x") as listing:
            async for chunk, version in listing():
                assert version == "9"
                await asyncio.sleep(0.1)  # the listeners taking the page in
                taken.append(([item["metadata"]["name"] for item in chunk], time.monotonic()))
        return taken

    taken = asyncio.run(scenario())
    assert [names for names, _ in taken] == [["a", "b"], ["c", "d"], ["e"]]
    assert [query.get("continue", "") for query, _ in asked] == ["", "t1", "t/2="]  # each page once
    assert all(query["limit"] == "2" and query["labelSelector"] == "app=x" for query, _ in asked)
    assert asked[1][1] < taken[0][1] and asked[2][1] < taken[1][1]  # asked for before the page before was taken in
    assert not watch._NEXT_PAGES


def test_a_listing_begun_again_drops_the_page_asked_for_by_the_one_before() -> None:
    """A listing that stopped after its first page (its stream broke) leaves the second asked for; the next listing
    of that kind starts from its first page, and the stale one is dropped, not served."""
    asked: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        asked.append(request.query.get("continue", ""))
        following = "" if request.query.get("continue") else "t1"
        return web.json_response({"metadata": {"resourceVersion": str(len(asked)), "continue": following},
                                  "items": [{"metadata": {"name": f"n{len(asked)}"}}]})

    async def scenario() -> None:
        async with kopf_against(handler, chunk_size=1) as listing:
            async for _ in listing():
                break  # the stream broke after the first page
            await asyncio.sleep(0.05)
            assert len(watch._NEXT_PAGES) == 1
            versions = [version async for _, version in listing()]
            assert versions == ["3", "4"]  # its own two pages, not the one asked for before

    asyncio.run(scenario())
    assert asked == ["", "t1", "", "t1"] and not watch._NEXT_PAGES


def test_the_kinds_listed_later_start_only_once_every_other_kind_is_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    followed = watch.Followed()
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    for kind in (watch.PODS, watch.SANDBOXES, watch.NETWORK_POLICIES):
        followed.listen(kind, watch.Listener(wants=lambda body: True, changed=lambda kind, body: None))
    followed.list_later(watch.NETWORK_POLICIES)
    started: list[str] = []
    release = {plural: asyncio.Event() for plural in ("pods", "sandboxes", "networkpolicies")}

    async def infinite_watch(*, resource: Any, **_: Any) -> AsyncIterator[Any]:
        started.append(resource.plural)
        await release[resource.plural].wait()
        yield watching.Bookmark.LISTED
        await asyncio.Event().wait()  # then watching, for ever

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)

    async def scenario() -> None:
        followed.pause_found.set()
        watch.start(None, ["a"])  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert sorted(started) == ["pods", "sandboxes"]
        release["pods"].set()
        await asyncio.sleep(0.01)
        assert sorted(started) == ["pods", "sandboxes"]
        release["sandboxes"].set()
        await asyncio.sleep(0.01)
        assert started[-1] == "networkpolicies" and not followed.listed.is_set()
        release["networkpolicies"].set()
        await asyncio.sleep(0.01)
        assert followed.listed.is_set()
        await watch.stop()

    asyncio.run(scenario())
