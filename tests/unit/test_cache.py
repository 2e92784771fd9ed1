"""The operator's own caches of watched objects (k8s.cache), and what they rely on from Kopf."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sandbox_operator.k8s.cache import Store

KEYS = st.sampled_from(["a", "b", "c"])
UIDS = st.sampled_from(["u1", "u2"])
OPS = st.lists(st.tuples(st.sampled_from(["put", "remove", "retain"]), KEYS, UIDS, st.integers(0, 9)))


@given(OPS)
def test_a_store_holds_what_the_watch_last_said_less_what_a_listing_did_not_find(
    ops: list[tuple[str, str, str, int]],
) -> None:
    store: Store[str, int] = Store()
    model: dict[str, tuple[str, int]] = {}  # key -> (uid, value)
    for op, key, uid, value in ops:
        if op == "put":
            store.put(key, uid, value)
            model[key] = (uid, value)
        elif op == "remove":
            removed = store.remove(key, uid)
            assert removed == (key in model and model[key][0] == uid)
            if removed:
                del model[key]
        else:  # a listing that found only ``uid``, in the scope of the keys up to ``key``
            dropped = store.retain({uid}, lambda k, bound=key: k <= bound)
            assert sorted(dropped) == sorted(k for k, (u, _) in model.items() if k <= key and u != uid)
            model = {k: v for k, v in model.items() if k not in dropped}
        assert {k: store.get(k) for k in "abc"} == {k: model[k][1] if k in model else None for k in "abc"}
        assert len(store) == len(model)


def test_a_deleted_event_of_a_replaced_object_leaves_its_successor() -> None:
    store: Store[str, int] = Store()
    store.put("a", "new", 2)
    assert not store.remove("a", "old")
    assert store.get("a") == 2


def test_kopf_runs_the_start_up_handlers_after_the_runtime_is_made_and_no_index_gates_the_start() -> None:
    """Pinned Kopf behaviour: start-up handlers run in registration order, before any watcher starts (the streams'
    wake-ups find the runtime they keep), and no ``@kopf.index`` is registered (Kopf's per-object index gate is
    quadratic at start-up)."""
    import kopf
    from kopf._core.intents import causes

    import sandbox_operator.operator
    import sandbox_operator.sandbox.handlers
    import sandbox_operator.tenant.handlers  # noqa: F401

    registry = kopf.get_default_registry()
    startup = [handler.fn.__name__ for handler in registry._activities.get_handlers(activity=causes.Activity.STARTUP)]
    assert startup.index("start") < startup.index("remember_runtime")
    assert startup.index("start") < startup.index("remember_tenant_runtime")
    assert len(set(startup)) == len(startup)  # Kopf tells its handlers apart by their names
    assert not registry._indexing.get_all_handlers()


def test_kopf_marks_the_objects_of_its_listing_with_an_event_type_of_none() -> None:
    """Pinned Kopf behaviour: sandbox.handlers runs the passes of listed Sandboxes (event type None) a few at a time,
    so that new ones are served first after a restart or takeover."""
    import inspect

    from kopf._cogs.clients import watching

    assert "yield {'type': None, 'object': obj}" in inspect.getsource(watching.continuous_watch)


def test_no_change_handler_is_registered_so_kopf_keeps_no_last_handled_state() -> None:
    # operator.NoDiffBase spares Kopf a deep copy of every body on every event. It is safe only while no change
    # handler (on.create, on.update, on.field, ...) or daemon is registered: those read that state.
    import inspect

    import kopf
    from kopf._core.reactor import processing

    import sandbox_operator.operator
    import sandbox_operator.pool.handlers
    import sandbox_operator.sandbox.handlers
    import sandbox_operator.tenant.handlers

    registry = kopf.get_default_registry()
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()
    storage = sandbox_operator.operator.NoDiffBase()
    assert storage.build(body=kopf.Body({"spec": {"a": 1}})) == {}
    assert storage.fetch(body=kopf.Body({})) is None
    # Kopf builds that state where it detects causes, for every event: what the no-op replaces.
    assert "diffbase_storage.build(" in inspect.getsource(processing)


def test_a_watch_event_counts_as_a_change_only_when_the_summary_moved() -> None:
    store: Store[str, int] = Store()
    assert store.record("ADDED", "a", "u1", lambda: 1)
    assert not store.record("MODIFIED", "a", "u1", lambda: 1)
    assert store.record("MODIFIED", "a", "u1", lambda: 2)
    assert store.record("ADDED", "a", "u2", lambda: 2)  # a new object under the same key
    assert store.record("DELETED", "a", "u2", lambda: 2) and store.get("a") is None
