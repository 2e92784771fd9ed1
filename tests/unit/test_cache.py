"""The operator's own caches of watched objects (k8s.cache), and what they rely on from Kopf."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sandbox_operator.k8s.cache import Store

KEYS = st.sampled_from(["a", "b", "c"])
UIDS = st.sampled_from(["u1", "u2"])
OPS = st.lists(st.tuples(st.sampled_from(["prime", "put", "remove", "sweep"]), KEYS, UIDS, st.integers(0, 9)))


@given(OPS)
def test_a_store_holds_what_the_watch_last_said_and_what_the_list_said_until_swept(
    ops: list[tuple[str, str, str, int]],
) -> None:
    store: Store[str, int] = Store()
    model: dict[str, tuple[str, int, bool]] = {}  # key -> (uid, value, confirmed by the watch)
    for op, key, uid, value in ops:
        if op == "prime":
            store.prime(key, uid, value)
            model.setdefault(key, (uid, value, False))
        elif op == "put":
            store.put(key, uid, value)
            model[key] = (uid, value, True)
        elif op == "remove":
            removed = store.remove(key, uid)
            assert removed == (key in model and model[key][0] == uid)
            if removed:
                del model[key]
        else:
            dropped = store.sweep()
            assert sorted(dropped) == sorted(k for k, (_, _, confirmed) in model.items() if not confirmed)
            model = {k: v for k, v in model.items() if v[2]}
        assert {k: store.get(k) for k in "abc"} == {k: model[k][1] if k in model else None for k in "abc"}
        assert len(store) == len(model)


def test_the_list_never_overrides_what_the_watch_said() -> None:
    store: Store[str, int] = Store()
    store.put("a", "u1", 2)
    store.prime("a", "u1", 1)
    assert store.get("a") == 2 and store.sweep() == []


def test_a_deleted_event_of_a_replaced_object_leaves_its_successor() -> None:
    store: Store[str, int] = Store()
    store.put("a", "new", 2)
    assert not store.remove("a", "old")
    assert store.get("a") == 2


def test_kopf_runs_the_cache_filling_start_up_handlers_after_the_runtime_is_made_and_no_index_gates_the_start() -> None:
    """Pinned Kopf behaviour: start-up handlers run in registration order, before any watcher starts (the caches are
    filled by them), and no ``@kopf.index`` is registered (Kopf's per-object index gate is quadratic at start-up)."""
    import kopf
    from kopf._core.intents import causes

    import sandbox_operator.operator
    import sandbox_operator.sandbox.handlers
    import sandbox_operator.tenant.handlers  # noqa: F401

    registry = kopf.get_default_registry()
    startup = [handler.fn.__name__ for handler in registry._activities.get_handlers(activity=causes.Activity.STARTUP)]
    assert startup.index("start") < startup.index("fill_lifetimes") < startup.index("remember_runtime")
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
