"""Which child events wake their Sandbox: a pod's binding never does, and the echo of the Sandbox's own create does
not while its status settles or while the pass that made the child still runs (it decides at its end); anything
else does, as before."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox_operator.api import names as c
from sandbox_operator.sandbox import handlers
from sandbox_operator.sandbox.decide import PodSummary
from sandbox_operator.sandbox.handlers import (
    WATCHED,
    SandboxState,
    _child_listener,
    _created,
    _expect,
    _settle_echoes,
)
from sandbox_operator.sandbox.render import render_network_policy, render_pod
from tests.unit.builders import sandbox

SBX = sandbox()
KEY = (SBX.namespace, SBX.name)
LOOP = asyncio.new_event_loop()  # for the scheduled passes of settling Sandboxes (never run)


def stored(manifest: dict[str, Any], version: str = "7") -> dict[str, Any]:
    """A child as the API server answers its create: what was sent, plus what the server sets."""
    body = copy.deepcopy(manifest)
    body["metadata"].update({"uid": f"uid-{manifest['kind']}", "resourceVersion": version,
                             "creationTimestamp": "2026-01-01T00:00:00Z"})
    if manifest["kind"] == "Pod":
        body["spec"]["schedulerName"] = "default-scheduler"  # defaulted by the API server
        body["status"] = {"phase": "Pending", "qosClass": "Guaranteed"}
    return body


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxState]:
    """A known Sandbox, with the wake-ups its children's events ask for recorded instead of run."""
    woken: list[str] = []
    monkeypatch.setattr(handlers, "_wake", lambda key, trigger: woken.append(trigger))
    monkeypatch.setattr(handlers.watch, "listed", lambda: True)
    sandbox_state = SandboxState(uid=SBX.uid)
    sandbox_state.woken = woken  # type: ignore[attr-defined]
    WATCHED.sandboxes[KEY] = sandbox_state
    try:
        yield sandbox_state
    finally:
        if sandbox_state.wakeup is not None:
            sandbox_state.wakeup.cancel()
        del WATCHED.sandboxes[KEY]
        for store in WATCHED.children.values():
            store.items.pop(KEY, None)


def event(kind: c.ChildKind, event_type: str, body: dict[str, Any]) -> None:
    trigger = "pod" if kind is c.ChildKind.POD else "networkpolicy"
    _child_listener(kind, trigger).changed(event_type, body)


def woken(state: SandboxState) -> list[str]:
    return state.woken  # type: ignore[attr-defined,no-any-return]


def test_a_pods_binding_changes_nothing_its_summary_holds() -> None:
    pod = stored(render_pod(SBX))
    bound = copy.deepcopy(pod)
    bound["spec"]["nodeName"] = "node-1"
    bound["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
    assert PodSummary.from_body(bound) == PodSummary.from_body(pod)
    changed = copy.deepcopy(bound)
    changed["spec"]["containers"][0]["image"] = "other:1"  # a change the operator owns still shows
    assert PodSummary.from_body(changed) != PodSummary.from_body(pod)


def settling(state: SandboxState) -> None:
    """The Sandbox's in-progress status waits, and its pass at the end of the wait is scheduled."""
    state.settling_since = 1.0
    state.wakeup = LOOP.call_later(3600, lambda: None)


def test_the_echo_of_its_own_create_does_not_wake_a_settling_sandbox(state: SandboxState) -> None:
    pod = stored(render_pod(SBX))
    _expect(state, c.ChildKind.POD, pod)
    settling(state)
    event(c.ChildKind.POD, "ADDED", pod)
    bound = copy.deepcopy(pod)
    bound["spec"]["nodeName"] = "node-1"
    event(c.ChildKind.POD, "MODIFIED", bound)
    assert woken(state) == []
    ready = copy.deepcopy(bound)
    ready["status"] = {"phase": "Running", "podIP": "10.0.0.9",
                       "conditions": [{"type": "Ready", "status": "True"}]}
    event(c.ChildKind.POD, "MODIFIED", ready)
    assert woken(state) == ["pod"]


@pytest.mark.parametrize("waiting", ["no status waits", "no pass scheduled"])
def test_the_echo_wakes_a_sandbox_whose_status_does_not_wait(state: SandboxState, waiting: str) -> None:
    # settle time 0, or a status written at once: the pass it starts may write the next progress step
    pod = stored(render_pod(SBX))
    _expect(state, c.ChildKind.POD, pod)
    if waiting == "no pass scheduled":
        state.settling_since = 1.0  # not backed by a scheduled pass: not trusted
    event(c.ChildKind.POD, "ADDED", pod)
    assert woken(state) == ["pod"]


def created_while_settling(state: SandboxState) -> dict[str, Any]:
    """The Sandbox's NetworkPolicy as its create returned it, its status waiting."""
    policy = stored(render_network_policy(SBX))
    _expect(state, c.ChildKind.NETWORK_POLICY, policy)
    settling(state)
    return policy


def test_a_child_unlike_what_its_create_returned_wakes_the_sandbox(state: SandboxState) -> None:
    policy = created_while_settling(state)
    changed = copy.deepcopy(policy)
    changed["spec"]["egress"] = [{}]  # changed between the create and the event: its event is its own
    event(c.ChildKind.NETWORK_POLICY, "ADDED", changed)
    assert woken(state) == ["networkpolicy"]


def test_a_deleted_child_always_wakes_the_sandbox(state: SandboxState) -> None:
    policy = created_while_settling(state)
    event(c.ChildKind.NETWORK_POLICY, "ADDED", policy)
    event(c.ChildKind.NETWORK_POLICY, "DELETED", policy)
    assert woken(state) == ["networkpolicy"]


def test_an_echo_before_the_creates_answer_waits_for_it(state: SandboxState) -> None:
    policy = stored(render_network_policy(SBX))
    state.creating.add(c.ChildKind.NETWORK_POLICY)
    event(c.ChildKind.NETWORK_POLICY, "ADDED", policy)  # the watch was quicker than the POST's answer
    assert woken(state) == []
    _expect(state, c.ChildKind.NETWORK_POLICY, policy)
    _created(state, c.ChildKind.NETWORK_POLICY)
    assert state.echo_deferred and not state.dirty
    state.settling_since = 1.0  # the pass ends with its status waiting: a pass is due anyway
    _settle_echoes(state)
    assert not state.dirty and not state.echo_deferred


def test_a_held_echo_makes_one_more_pass_when_the_status_does_not_wait(state: SandboxState) -> None:
    policy = stored(render_network_policy(SBX))
    state.creating.add(c.ChildKind.NETWORK_POLICY)
    event(c.ChildKind.NETWORK_POLICY, "ADDED", policy)
    _expect(state, c.ChildKind.NETWORK_POLICY, policy)
    _created(state, c.ChildKind.NETWORK_POLICY)
    _settle_echoes(state)  # the pass wrote its status at once
    assert state.dirty


@pytest.mark.parametrize("answer", ["refused", "other"])
def test_a_held_event_that_was_not_the_echo_makes_one_more_pass(state: SandboxState, answer: str) -> None:
    policy = stored(render_network_policy(SBX))
    state.creating.add(c.ChildKind.NETWORK_POLICY)
    event(c.ChildKind.NETWORK_POLICY, "ADDED", policy)
    if answer == "other":  # the create answered with something else: the event showed a change since
        answered = stored(render_network_policy(SBX))
        answered["spec"]["egress"] = [{}]
        _expect(state, c.ChildKind.NETWORK_POLICY, answered)
    _created(state, c.ChildKind.NETWORK_POLICY)  # refused: no expectation at all
    assert state.dirty and not state.echo_deferred
    assert c.ChildKind.NETWORK_POLICY not in state.creating and not state.early_echoes


def test_an_echo_during_the_pass_that_made_it_is_left_to_that_pass(state: SandboxState) -> None:
    pod = stored(render_pod(SBX))
    _expect(state, c.ChildKind.POD, pod)

    async def during_a_pass() -> None:
        async with state.lock:
            event(c.ChildKind.POD, "ADDED", pod)

    asyncio.run(during_a_pass())
    assert woken(state) == [] and state.echo_deferred
    _settle_echoes(state)
    assert state.dirty  # its status did not wait: one more pass


def test_an_echo_during_a_later_pass_that_saw_the_child_is_left_alone(state: SandboxState) -> None:
    """Known before the running pass began (a claim, a create in the pass before): that pass decides with it as the
    echo shows it, and nothing follows for it; a pod that made a pass write Ready is not looked at a third time."""
    pod = stored(render_pod(SBX))
    _expect(state, c.ChildKind.POD, pod)
    state.pass_started = time.monotonic() + 1  # the running pass began after the child was known

    async def during_a_later_pass() -> None:
        async with state.lock:
            event(c.ChildKind.POD, "MODIFIED", pod)

    asyncio.run(during_a_later_pass())
    assert woken(state) == [] and not state.echo_deferred
    _settle_echoes(state)
    assert not state.dirty
