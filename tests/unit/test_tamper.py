"""What the decision does with children someone else changed, names it does not own, and its own failures."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import load_sandbox
from sandbox_operator.k8s.manifest import owned_view
from sandbox_operator.sandbox.decide import (
    CreateChild,
    DeleteChild,
    DeleteSandbox,
    Observed,
    Plan,
    UpdateChild,
    decide,
    decide_safely,
)
from sandbox_operator.sandbox.render import render_network_policy, render_pod
from tests.unit.builders import at, body, children, running_pod, sandbox, with_status


def ready(plan: Plan) -> dict[str, Any]:
    return next(cond for cond in plan.status["conditions"] if cond["type"] == c.ConditionType.READY)


def tampered_policy_observed(**held: Any) -> tuple[Any, Observed]:
    sbx = sandbox()
    observed = children(sbx, running_pod(sbx))
    sbx = with_status(sbx, observed, at(5))  # Ready already: the only event is about the policy
    policy = render_network_policy(sbx)
    policy["spec"]["egress"] = [{}]
    assert observed.network_policy is not None
    return sbx, replace(
        observed,
        network_policy=replace(observed.network_policy, owned=owned_view(policy)),
        held=held,
    )


def test_an_opened_network_policy_is_restored_once_with_a_warning() -> None:
    sbx, observed = tampered_policy_observed()
    plan = decide(sbx, observed, at(10))
    assert plan.actions == (UpdateChild(render_network_policy(sbx), repair=True),)
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "Tampered")]
    assert "spec" in plan.events[0].message


def test_a_policy_changed_again_right_after_a_repair_waits_for_its_turn() -> None:
    sbx, observed = tampered_policy_observed(**{c.ChildKind.NETWORK_POLICY: at(14)})
    plan = decide(sbx, observed, at(10))
    assert plan.actions == ()
    assert plan.events == ()
    assert plan.requeue_at == at(14)


def test_a_pod_with_another_image_is_replaced_and_says_it_was_tampered_with() -> None:
    sbx = sandbox()
    pod = render_pod(sbx)
    pod["spec"]["containers"][0]["image"] = "evil:latest"
    running = running_pod(sbx)
    plan = decide(sbx, children(sbx, replace(running, owned=owned_view(pod))), at(10))
    assert plan.actions == (DeleteChild(c.ChildKind.POD, running.name, repair=True),)
    assert ready(plan)["reason"] == c.Reason.POD_TAMPERED
    assert "spec.containers[sandbox].image" in ready(plan)["message"]
    assert [e.reason for e in plan.events] == ["Tampered"]


def test_a_pod_that_lost_its_labels_is_replaced() -> None:
    sbx = sandbox()
    pod = render_pod(sbx)
    pod["metadata"]["labels"] = {}
    plan = decide(sbx, children(sbx, replace(running_pod(sbx), owned=owned_view(pod))), at(10))
    assert [type(a) for a in plan.actions] == [DeleteChild]
    assert ready(plan)["reason"] == c.Reason.POD_TAMPERED


def test_a_held_pod_repair_is_reported_and_retried_later() -> None:
    sbx = sandbox()
    pod = render_pod(sbx)
    pod["metadata"]["labels"] = {}
    observed = children(sbx, replace(running_pod(sbx), owned=owned_view(pod)))
    plan = decide(sbx, replace(observed, held={c.ChildKind.POD: at(42)}), at(10))
    assert plan.actions == ()
    assert ready(plan)["reason"] == c.Reason.POD_TAMPERED and "fighting" in ready(plan)["message"]
    assert plan.requeue_at == at(42)


def test_a_changed_spec_is_not_called_tampering() -> None:
    old = sandbox()
    observed = children(old, running_pod(old))
    new = sandbox({"image": "busybox"}, generation=2)
    plan = decide(new, replace(observed, network_policy=children(new).network_policy), at(10))
    assert ready(plan)["reason"] == c.Reason.SPEC_CHANGED
    assert all(e.reason != "Tampered" for e in plan.events)


def test_a_name_taken_by_another_object_stops_the_pod_and_deletes_a_running_one() -> None:
    sbx = sandbox()
    conflict = "NetworkPolicy sbx-demo already exists and this Sandbox does not own it; it is never adopted"
    fresh = decide(sbx, Observed(name_conflict=conflict), at(0))
    assert not any(isinstance(a, CreateChild) and a.manifest["kind"] == "Pod" for a in fresh.actions)
    assert (fresh.status["phase"], ready(fresh)["reason"]) == ("Failed", c.Reason.NAME_CONFLICT)
    running = decide(sbx, replace(children(sbx, running_pod(sbx)), name_conflict=conflict), at(10))
    assert DeleteChild(c.ChildKind.POD, "sbx-demo") in running.actions


def test_a_refusal_that_repeats_an_env_value_reaches_status_without_it() -> None:
    sbx = sandbox({"env": [{"name": "TOKEN", "value": "tok-9f8e7d6c5b4a"}]})
    refusal = 'admission denied: TOKEN="tok-9f8e7d6c5b4a" looks like a credential'
    plan = decide(sbx, Observed(create_error=refusal), at(0))
    assert "tok-9f8e7d6c5b4a" not in str(plan.status)
    assert all("tok-9f8e7d6c5b4a" not in e.message for e in plan.events)
    assert "looks like a credential" in ready(plan)["message"]


def broken() -> Any:
    raise OverflowError("date value out of range")


def test_a_decision_that_raises_reports_reconcile_error_once() -> None:
    raw = body({"lifetime": {"ttlSeconds": 60}})
    raw["status"] = decide(load_sandbox(raw), Observed(), at(0)).status
    plan, error = decide_safely(broken, raw, Observed(), at(10))
    assert isinstance(error, OverflowError)
    assert ready(plan)["reason"] == c.Reason.RECONCILE_ERROR
    assert "OverflowError" in ready(plan)["message"] and "out of range" not in ready(plan)["message"]
    assert [e.reason for e in plan.events] == ["ReconcileError"]
    assert plan.requeue_at == at(60)  # the deadline the last status announced
    raw["status"] = plan.status
    again, _ = decide_safely(broken, raw, Observed(), at(20))
    assert again.events == ()


def test_a_decision_that_raises_still_deletes_past_the_known_deadline() -> None:
    raw = body({"lifetime": {"ttlSeconds": 60}})
    raw["status"] = decide(load_sandbox(raw), Observed(), at(0)).status
    plan, _ = decide_safely(broken, raw, Observed(), at(61))
    assert plan.actions == (DeleteSandbox(),)


def test_a_decision_that_raises_leaves_suspension_on_expiry_to_a_working_pass() -> None:
    raw = body({"lifetime": {"ttlSeconds": 60, "onExpiry": "Suspend"}})
    raw["status"] = decide(load_sandbox(raw), Observed(), at(0)).status
    plan, _ = decide_safely(broken, raw, Observed(), at(61))
    assert plan.actions == ()


def test_redaction_that_lengthens_a_message_still_gives_a_status_the_api_server_takes() -> None:
    sbx = sandbox({"env": [{"name": "K", "value": "abcd"}]})
    plan = decide(sbx, Observed(create_error="abcd " * 400), at(0))
    assert len(ready(plan)["message"]) <= c.MAX_MESSAGE_LENGTH
    assert "abcd" not in str(plan.status)


def test_the_fallback_reads_any_body_without_raising() -> None:
    raw = body({"lifetime": {"ttlSeconds": 60}})
    raw["status"] = decide(load_sandbox(raw), Observed(), at(0)).status
    for spec in ({"lifetime": "Suspend"}, "not a spec", {"lifetime": {"onExpiry": ["Suspend"]}}):
        plan, _ = decide_safely(broken, {**raw, "spec": spec}, Observed(), at(61))
        assert plan.actions == (DeleteSandbox(),)
