"""The reconcile loop every kind shares, driven by fake passes: folded triggers, backoff, wake-ups, one error policy;
and the Sandbox shell's handling of a create that finds the name taken, against a fake API door."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox_operator import metrics
from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import SandboxStatus
from sandbox_operator.k8s.client import KubeError
from sandbox_operator.k8s.loop import MAX_RETRY_DELAY, ObjectState, PassResult, forget_unlisted, reconcile, track
from sandbox_operator.k8s.manifest import ChildSummary
from sandbox_operator.operator import Runtime
from sandbox_operator.sandbox.handlers import (
    EXPECTATION_SECONDS,
    WATCHED,
    SandboxState,
    _child,
    _create,
    _expect,
    _settling,
)
from sandbox_operator.sandbox.render import render_network_policy
from tests.unit.builders import sandbox


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (the loop's timers need one)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


def delay_of(state: ObjectState) -> float | None:
    """Seconds until the scheduled wake-up, or None when none is scheduled."""
    if state.wakeup is None:
        return None
    return state.wakeup.when() - asyncio.get_running_loop().time()


def metric(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@run
async def test_triggers_during_a_pass_fold_into_one_more_pass() -> None:
    state, release, runs = ObjectState(), asyncio.Event(), []

    async def one_pass() -> PassResult:
        runs.append(len(runs))
        await release.wait()
        return PassResult()

    first = asyncio.create_task(reconcile(state, one_pass, what="x", trigger="test"))
    await asyncio.sleep(0)
    for _ in range(5):
        await reconcile(state, one_pass, what="x", trigger="test")  # returns at once: a pass is running
    release.set()
    await first
    assert runs == [0, 1]


@run
async def test_failures_back_off_exponentially_and_a_success_resets_them() -> None:
    state, results = ObjectState(), [PassResult(failed="rejected"), PassResult(failed="rejected"), PassResult()]
    before = metric("sandbox_operator_reconcile_errors_total", kind="rejected")

    async def one_pass() -> PassResult:
        return results.pop(0)

    await reconcile(state, one_pass, what="x", trigger="test")
    assert state.failures == 1 and 1.9 < (delay_of(state) or 0) <= 2.1
    await reconcile(state, one_pass, what="x", trigger="test")
    assert state.failures == 2 and 3.9 < (delay_of(state) or 0) <= 4.1
    await reconcile(state, one_pass, what="x", trigger="test")
    assert state.failures == 0 and state.wakeup is None
    assert metric("sandbox_operator_reconcile_errors_total", kind="rejected") == before + 2


@run
async def test_the_backoff_is_bounded() -> None:
    state = ObjectState(failures=30)

    async def one_pass() -> PassResult:
        return PassResult(failed="rejected")

    await reconcile(state, one_pass, what="x", trigger="test")
    assert (delay_of(state) or 0) <= MAX_RETRY_DELAY + 1


@run
async def test_a_pass_is_run_again_at_the_time_it_asks_for() -> None:
    state, runs = ObjectState(), []

    async def one_pass() -> PassResult:
        runs.append(datetime.now(UTC))
        return PassResult(requeue_at=datetime.now(UTC) + timedelta(seconds=0.2)) if len(runs) == 1 else PassResult()

    await reconcile(state, one_pass, what="x", trigger="test")
    await asyncio.sleep(0.5)
    assert len(runs) == 2 and runs[1] - runs[0] >= timedelta(seconds=0.2)


@run
async def test_a_deleted_object_is_not_woken() -> None:
    state = ObjectState()

    async def one_pass() -> PassResult:
        return PassResult(requeue_at=datetime.now(UTC) + timedelta(seconds=5))

    await reconcile(state, one_pass, what="x", trigger="test")
    assert state.wakeup is not None
    state.forget()
    assert state.wakeup is None and state.deleted


@run
async def test_api_errors_and_bugs_are_counted_backed_off_and_logged_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "hunter2-" + "secret"  # the traceback quotes source lines: keep the value out of them
    state = ObjectState(secrets=[secret])
    temporary = metric("sandbox_operator_reconcile_errors_total", kind="temporary")
    unexpected = metric("sandbox_operator_reconcile_errors_total", kind="unexpected")

    async def api_down() -> PassResult:
        raise KubeError("create", "Pod", 503, f"webhook echoed {secret}")

    async def bug() -> PassResult:
        raise ValueError(f"value {secret} is odd")

    with caplog.at_level(logging.WARNING):
        await reconcile(state, api_down, what="sandbox ns/a", trigger="test")
        await reconcile(state, bug, what="sandbox ns/a", trigger="test")
    assert metric("sandbox_operator_reconcile_errors_total", kind="temporary") == temporary + 1
    assert metric("sandbox_operator_reconcile_errors_total", kind="unexpected") == unexpected + 1
    assert state.failures == 2
    assert secret not in caplog.text
    assert "ValueError" in caplog.text and "sandbox ns/a" in caplog.text


class FakeKube:
    """The API door with a name already taken: create answers "exists", get returns what holds the name."""

    def __init__(self, holder: dict[str, Any] | None) -> None:
        self.holder = holder
        self.calls: list[str] = []

    async def create(self, kind: c.ChildKind, manifest: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(f"create {kind}")
        return None

    async def get_child(self, kind: c.ChildKind, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get {kind}")
        return self.holder


@run
async def test_a_taken_name_held_by_the_sandbox_is_observed_as_it_is() -> None:
    sbx = sandbox()
    policy = render_network_policy(sbx)
    live = {**policy, "spec": {**policy["spec"], "egress": [{}]}}
    state = SandboxState()
    runtime = Runtime(kube=FakeKube(live), defaults=sbx.defaults)  # type: ignore[arg-type]
    refusal = await _create(runtime, state, sbx.uid, policy, look_first=False)
    assert state.found
    assert refusal is None
    summary, _, read = state.expected[c.ChildKind.NETWORK_POLICY]
    assert read  # known from a read: looked at again soon
    assert summary.owned is not None and summary.owned["spec"]["egress"] == [{}]  # type: ignore[union-attr]


@run
async def test_a_taken_name_held_by_another_object_is_a_conflict() -> None:
    sbx = sandbox()
    policy = render_network_policy(sbx)
    foreign = {**policy, "metadata": {**policy["metadata"], "ownerReferences": []}}
    runtime = Runtime(kube=FakeKube(foreign), defaults=sbx.defaults)  # type: ignore[arg-type]
    refusal = await _create(runtime, SandboxState(), sbx.uid, policy, look_first=True)
    assert refusal is not None and refusal.name_conflict is not None
    assert "never adopted" in refusal.name_conflict


def test_a_just_created_child_counts_as_observed_until_the_watch_shows_it() -> None:
    sbx = sandbox()
    policy = render_network_policy(sbx)
    key = (sbx.namespace, sbx.name)
    state = SandboxState()
    assert _child(state, key, c.ChildKind.NETWORK_POLICY) is None
    _expect(state, c.ChildKind.NETWORK_POLICY, policy)
    expected = _child(state, key, c.ChildKind.NETWORK_POLICY)
    assert expected is not None and expected.name == policy["metadata"]["name"]
    seen = ChildSummary.from_body(policy)
    store = WATCHED.children[c.ChildKind.NETWORK_POLICY]
    store.put(key, sbx.uid, seen)  # the watch caught up: what it saw wins and the expectation is dropped
    try:
        assert _child(state, key, c.ChildKind.NETWORK_POLICY) is seen
        assert c.ChildKind.NETWORK_POLICY not in state.expected
    finally:
        store.remove(key, sbx.uid)


def test_an_expectation_the_watch_never_confirms_lapses() -> None:
    sbx = sandbox()
    key = (sbx.namespace, sbx.name)
    state = SandboxState()
    _expect(state, c.ChildKind.POD, render_network_policy(sbx) | {"kind": "Pod"})
    summary, made, _ = state.expected[c.ChildKind.POD]
    state.expected[c.ChildKind.POD] = (summary, made - EXPECTATION_SECONDS - 1, False)
    assert _child(state, key, c.ChildKind.POD) is None


def _status(phase: str, reason: str) -> dict[str, Any]:
    """A status as the operator writes it (SandboxStatus.to_dict)."""
    ready = {"type": "Ready", "status": "True" if phase == "Ready" else "False", "reason": str(reason),
             "message": str(reason), "lastTransitionTime": "2026-01-01T00:00:00Z"}
    return SandboxStatus.model_validate({"phase": phase, "conditions": [ready]}).to_dict()


def test_an_in_progress_status_waits_for_the_one_that_replaces_it_but_no_longer_than_the_settle_time() -> None:
    runtime = Runtime(kube=None, defaults=sandbox().defaults, status_settle_seconds=2.0)  # type: ignore[arg-type]
    state = SandboxState()
    creating = _status("Pending", c.Reason.POD_MISSING)
    until = _settling(state, runtime, {}, creating)
    assert until is not None and 1.9 < until - time.monotonic() <= 2.0
    # A later in-progress status keeps the first one's deadline; once it has passed, it is written.
    assert _settling(state, runtime, {}, _status("Pending", c.Reason.CONTAINER_CREATING)) == until
    state.settling_since = time.monotonic() - 2.0
    assert _settling(state, runtime, {}, _status("Pending", c.Reason.CONTAINER_CREATING)) is None
    assert state.settling_since is None


@pytest.mark.parametrize(("old", "new"), [
    ({}, _status("Ready", c.Reason.POD_READY)),  # Ready: at once
    (_status("Pending", c.Reason.POD_PENDING), _status("Pending", c.Reason.QUOTA_EXCEEDED)),  # a refusal
    (_status("Ready", c.Reason.POD_READY), _status("Pending", c.Reason.POD_MISSING)),  # a lost pod
    (_status("Pending", c.Reason.POD_PENDING), _status("Failed", c.Reason.OOM_KILLED)),
])
def test_everything_but_progress_on_the_way_up_is_written_at_once(old: dict[str, Any], new: dict[str, Any]) -> None:
    runtime = Runtime(kube=None, defaults=sandbox().defaults, status_settle_seconds=2.0)  # type: ignore[arg-type]
    state = SandboxState(settling_since=time.monotonic())
    assert _settling(state, runtime, old, new) is None
    assert state.settling_since is None


def test_a_settle_time_of_zero_writes_every_change() -> None:
    runtime = Runtime(kube=None, defaults=sandbox().defaults)  # type: ignore[arg-type]
    assert _settling(SandboxState(), runtime, {}, _status("Pending", c.Reason.POD_MISSING)) is None


EVENTS = st.lists(st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED", None, "relisted"]),
                            st.sampled_from(["a", "b"]), st.sampled_from(["u1", "u2", "u3"])))


@given(EVENTS)
def test_a_table_of_objects_holds_the_newest_object_of_each_name_and_forgets_each_gone_one_once(
    events: list[tuple[str | None, str, str]],
) -> None:
    """Sandboxes, pools and Tenants share ``track`` / ``forget_unlisted``: a DELETED event of an older object of that
    name changes nothing, a new uid under a name replaces (and forgets) the old one, a listing forgets what it did
    not find."""
    table: dict[str, ObjectState] = {}
    forgotten: list[ObjectState] = []
    model: dict[str, str] = {}  # name -> uid

    def forget(key: str, state: ObjectState) -> None:
        assert table[key] is state and state not in forgotten
        forgotten.append(state)
        del table[key]

    for kind, key, uid in events:
        if kind == "relisted":  # a listing that found only ``uid``
            forget_unlisted(table, {uid}, lambda name: True, forget)
            model = {name: found for name, found in model.items() if found == uid}
            continue
        before = table.get(key)
        state = track(table, key, uid, kind, lambda uid: ObjectState(uid=uid), forget)
        if kind == "DELETED":
            assert state is None
            if model.get(key) == uid:
                del model[key]
        else:
            assert state is not None and state.uid == uid and table[key] is state
            assert (state is before) == (model.get(key) == uid)
            model[key] = uid
        assert {name: held.uid for name, held in table.items()} == model


@run
async def test_each_pass_is_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    state = ObjectState()

    async def one_pass() -> PassResult:
        return PassResult(failed="rejected")

    with caplog.at_level(logging.INFO, logger="sandbox_operator.k8s.loop"):
        await reconcile(state, one_pass, what="sandbox ns/a", trigger="pod")
    assert "pass (pod)" not in caplog.text
    state.forget()
    state = ObjectState()
    with caplog.at_level(logging.DEBUG, logger="sandbox_operator.k8s.loop"):
        await reconcile(state, one_pass, what="sandbox ns/a", trigger="pod")
    assert "sandbox ns/a: pass (pod) in" in caplog.text and "failed (rejected)" in caplog.text
    state.forget()
