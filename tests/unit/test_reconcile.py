"""Reconcile decisions: which children to create or delete, the status, events and the next wake-up."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import SandboxObject, SandboxStatus, load_sandbox
from sandbox_operator.api.schema import status_changed
from sandbox_operator.k8s.manifest import manifest_hash
from sandbox_operator.sandbox.decide import (
    CreateChild,
    DeleteChild,
    DeleteSandbox,
    Observed,
    Plan,
    PodSummary,
    UpdateChild,
    decide,
)
from sandbox_operator.sandbox.render import render_pod
from tests.unit import strategies
from tests.unit.builders import at, body, children, running_pod, sandbox, with_status


def condition(plan: Plan, kind: c.ConditionType) -> dict[str, Any]:
    return next(cond for cond in plan.status["conditions"] if cond["type"] == kind)


def created_kinds(plan: Plan) -> list[str]:
    return [action.manifest["kind"] for action in plan.actions if isinstance(action, CreateChild)]


def event_reasons(plan: Plan) -> list[str]:
    return [event.reason for event in plan.events]


def test_new_sandbox_creates_policy_before_pod() -> None:
    plan = decide(sandbox({"network": {"ports": [{"name": "http", "port": 80}]}}), Observed(), at(0))
    assert created_kinds(plan) == ["NetworkPolicy", "Service", "Pod"]
    assert plan.status["phase"] == "Pending"
    assert condition(plan, c.ConditionType.READY)["reason"] == "PodMissing"
    assert event_reasons(plan) == ["Created"]


def test_persistent_workspace_claim_is_created_first() -> None:
    plan = decide(sandbox({"workspace": {"persistent": True}}), Observed(), at(0))
    assert created_kinds(plan) == ["PersistentVolumeClaim", "NetworkPolicy", "Pod"]


def test_ready_pod_makes_the_sandbox_ready_once() -> None:
    sbx = sandbox()
    observed = children(sbx, running_pod(sbx))
    first = decide(sbx, observed, at(10))
    assert first.actions == ()
    assert first.status["phase"] == "Ready"
    ready = condition(first, c.ConditionType.READY)
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == (
        "True",
        "PodReady",
        "2025-01-01T12:00:10Z",
    )
    assert first.status["podName"] == "sbx-demo"
    assert first.status["podIP"] == "10.244.0.7"
    assert first.status["startedAt"] == "2025-01-01T12:00:05Z"
    assert event_reasons(first) == ["Ready"]


def test_repeated_decisions_give_identical_status_and_no_events() -> None:
    sbx = sandbox({"lifetime": {"ttlSeconds": 3600, "idleTimeoutSeconds": 600}})
    observed = children(sbx, running_pod(sbx))
    settled = with_status(sbx, observed, at(10))
    again, later = decide(settled, observed, at(20)), decide(settled, observed, at(300))
    assert again.status == later.status == settled.status.to_dict()
    assert again.events == later.events == ()
    assert not status_changed(SandboxStatus, settled.status.to_dict(), again.status)


def test_condition_keeps_transition_time_while_reason_holds() -> None:
    sbx = sandbox()
    pending = replace(
        running_pod(sbx), phase="Pending", ready=False, started_at=None, waiting_reason="ContainerCreating"
    )
    first = with_status(sbx, children(sbx, pending), at(1))
    second = decide(first, children(first, pending), at(2))
    assert condition(second, c.ConditionType.READY)["lastTransitionTime"] == "2025-01-01T12:00:01Z"
    third = decide(first, children(first, running_pod(first)), at(3))
    assert condition(third, c.ConditionType.READY)["lastTransitionTime"] == "2025-01-01T12:00:03Z"


def test_vanished_pod_is_recreated() -> None:
    sbx = sandbox()
    settled = with_status(sbx, children(sbx, running_pod(sbx)), at(10))
    plan = decide(settled, children(settled), at(20))
    assert created_kinds(plan) == ["Pod"]
    assert condition(plan, c.ConditionType.READY)["reason"] == "PodMissing"
    assert "podName" not in plan.status
    assert event_reasons(plan) == []


def test_oom_killed_pod_fails_with_reason_and_is_not_recreated() -> None:
    sbx = sandbox({"resources": {"memory": "256Mi"}})
    settled = with_status(sbx, children(sbx, running_pod(sbx)), at(10))
    oom = replace(running_pod(sbx), phase="Failed", ready=False, terminated_reason="OOMKilled", exit_code=137)
    plan = decide(settled, children(settled, oom), at(20))
    assert plan.actions == ()
    assert plan.status["phase"] == "Failed"
    ready = condition(plan, c.ConditionType.READY)
    assert (ready["status"], ready["reason"]) == ("False", "OOMKilled")
    assert "256Mi" in ready["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "Failed")]
    failed = with_status(settled, children(settled, oom), at(20))
    assert decide(failed, children(failed, oom), at(30)).actions == ()


def test_exited_container_reports_only_the_exit_code() -> None:
    sbx = sandbox()
    exited = replace(running_pod(sbx), phase="Failed", ready=False, exit_code=3)
    ready = condition(decide(sbx, children(sbx, exited), at(20)), c.ConditionType.READY)
    assert (ready["reason"], ready["message"]) == ("ContainerExited", "container exited with code 3")


def test_image_pull_back_off_is_image_unavailable() -> None:
    sbx = sandbox()
    waiting = replace(
        running_pod(sbx),
        phase="Pending",
        ready=False,
        started_at=None,
        waiting_reason="ImagePullBackOff",
        waiting_message="Back-off pulling image",
    )
    plan = decide(sbx, children(sbx, waiting), at(20))
    assert plan.status["phase"] == "Failed"
    assert condition(plan, c.ConditionType.READY)["reason"] == "ImageUnavailable"
    assert plan.actions == ()


def test_unschedulable_pod_is_pending_with_the_scheduler_message() -> None:
    sbx = sandbox()
    pod = replace(
        running_pod(sbx),
        phase="Pending",
        ready=False,
        started_at=None,
        unschedulable_message="0/1 nodes are available: 1 Insufficient cpu.",
    )
    ready = condition(decide(sbx, children(sbx, pod), at(5)), c.ConditionType.READY)
    assert ready["reason"] == "PodPending"
    assert "Insufficient cpu" in ready["message"]


def test_changed_spec_replaces_the_pod() -> None:
    old = sandbox()
    new = sandbox({"image": "python:3.13-slim"}, generation=2)
    plan = decide(new, children(new, running_pod(old)), at(20))
    assert plan.actions == (DeleteChild(c.ChildKind.POD, "sbx-demo"),)
    assert condition(plan, c.ConditionType.READY)["reason"] == "SpecChanged"
    assert plan.status["observedGeneration"] == 2


def test_failed_pod_is_replaced_after_a_spec_change() -> None:
    old = sandbox()
    failed = replace(running_pod(old), phase="Failed", ready=False, exit_code=1)
    new = sandbox({"resources": {"memory": "1Gi"}}, generation=2)
    assert decide(new, children(new, failed), at(20)).actions == (DeleteChild(c.ChildKind.POD, "sbx-demo"),)


def test_lifetime_change_keeps_the_pod() -> None:
    old = sandbox()
    new = sandbox({"lifetime": {"ttlSeconds": 7200}}, generation=2)
    assert decide(new, children(new, running_pod(old)), at(20)).actions == ()


def test_terminating_pod_is_waited_for() -> None:
    sbx = sandbox()
    going = replace(running_pod(sbx), deletion_timestamp=at(19))
    plan = decide(sbx, children(sbx, going), at(20))
    assert plan.actions == ()
    assert condition(plan, c.ConditionType.READY)["reason"] == "PodTerminating"


def test_changed_network_updates_the_policy_in_place() -> None:
    old = sandbox()
    new = sandbox({"network": {"egress": {"mode": "Internet"}}}, generation=2)
    observed = replace(children(old, running_pod(old)))
    (action,) = decide(new, observed, at(20)).actions
    assert isinstance(action, UpdateChild)
    assert action.manifest["kind"] == "NetworkPolicy"


def test_service_is_deleted_when_ports_are_removed() -> None:
    old = sandbox({"network": {"ports": [{"name": "http", "port": 80}]}})
    new = sandbox(generation=2)
    plan = decide(new, children(old, running_pod(old)), at(20))
    assert DeleteChild(c.ChildKind.SERVICE, "sbx-demo") in plan.actions
    assert "serviceName" not in plan.status


def test_expired_sandbox_is_deleted_at_ttl() -> None:
    sbx = sandbox({"lifetime": {"ttlSeconds": 60}})
    observed = children(sbx, running_pod(sbx))
    before = decide(sbx, observed, at(59))
    assert DeleteSandbox() not in before.actions
    assert before.requeue_at == at(60)
    assert before.status["expiresAt"] == "2025-01-01T12:01:00Z"
    plan = decide(with_status(sbx, observed, at(59)), observed, at(60))
    assert plan.actions == (DeleteSandbox(),)
    assert plan.expiry_reason == "TTLExpired"
    assert plan.status["phase"] == "Expired"
    assert condition(plan, c.ConditionType.EXPIRED)["status"] == "True"
    assert "Expired" in event_reasons(plan)
    assert plan.requeue_at is None


def test_expires_at_deadline_is_reached() -> None:
    sbx = sandbox({"lifetime": {"expiresAt": "2025-01-01T13:00:00+01:00"}})
    plan = decide(sbx, children(sbx, running_pod(sbx)), at(0))
    assert plan.actions == (DeleteSandbox(),)
    assert plan.expiry_reason == "DeadlineReached"


def test_idle_timeout_counts_from_the_latest_activity() -> None:
    spec = {"lifetime": {"idleTimeoutSeconds": 300, "ttlSeconds": 86400}}
    idle = sandbox(spec)
    observed = children(idle, running_pod(idle, started=5))
    assert decide(idle, observed, at(100)).requeue_at == at(305)
    assert decide(idle, observed, at(305)).expiry_reason == "IdleTimeout"
    active = sandbox(spec, annotations={c.ANNOTATION_LAST_ACTIVITY: "2025-01-01T12:10:00Z"})
    plan = decide(active, observed, at(700))
    assert plan.actions == ()
    assert plan.requeue_at == at(900)
    assert plan.status["lastActivityAt"] == "2025-01-01T12:10:00Z"


def test_malformed_activity_annotation_is_ignored() -> None:
    sbx = sandbox({"lifetime": {"idleTimeoutSeconds": 60}}, annotations={c.ANNOTATION_LAST_ACTIVITY: "yesterday"})
    assert decide(sbx, children(sbx), at(0)).requeue_at == at(60)


def test_expiry_with_suspend_keeps_the_workspace_and_deletes_the_pod() -> None:
    spec = {"lifetime": {"idleTimeoutSeconds": 60, "onExpiry": "Suspend"}, "workspace": {"persistent": True}}
    sbx = sandbox(spec)
    observed = children(sbx, running_pod(sbx, started=0))
    plan = decide(with_status(sbx, observed, at(30)), observed, at(60))
    assert plan.actions == (DeleteChild(c.ChildKind.POD, "sbx-demo"),)
    assert plan.status["phase"] == "Expired"
    assert condition(plan, c.ConditionType.SUSPENDED)["reason"] == "IdleTimeout"
    assert condition(plan, c.ConditionType.EXPIRED)["status"] == "True"
    assert set(event_reasons(plan)) == {"Expired", "Suspended"}
    assert plan.requeue_at is None


def test_moving_the_deadline_later_resumes_an_expired_suspended_sandbox() -> None:
    spec = {"lifetime": {"idleTimeoutSeconds": 60, "onExpiry": "Suspend"}}
    expired = with_status(sandbox(spec), children(sandbox(spec)), at(120))
    assert expired.status.phase == "Expired"
    bumped = sandbox(spec, status=expired.status.to_dict(), annotations={c.ANNOTATION_LAST_ACTIVITY: format_at(130)})
    plan = decide(bumped, children(bumped), at(131))
    assert created_kinds(plan) == ["Pod"]
    assert condition(plan, c.ConditionType.EXPIRED)["status"] == "False"
    assert set(event_reasons(plan)) == {"Resumed"}
    assert plan.requeue_at == at(190)


def format_at(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_suspended_sandbox_deletes_only_the_pod() -> None:
    spec: dict[str, Any] = {"network": {"ports": [{"name": "http", "port": 80}]}, "workspace": {"persistent": True}}
    running = sandbox(spec)
    observed = children(running, running_pod(running))
    settled = with_status(running, observed, at(10))
    suspended = sandbox({**spec, "suspended": True}, generation=2, status=settled.status.to_dict())
    plan = decide(suspended, observed, at(20))
    assert plan.actions == (DeleteChild(c.ChildKind.POD, "sbx-demo"),)
    assert plan.status["phase"] == "Suspended"
    assert condition(plan, c.ConditionType.SUSPENDED)["reason"] == "UserRequested"
    assert event_reasons(plan) == ["Suspended"]
    gone = decide(with_status(suspended, observed, at(20)), children(suspended), at(30))
    assert gone.actions == ()
    assert gone.events == ()


def test_quota_error_is_reported_and_the_pod_not_retried_in_the_same_plan() -> None:
    sbx = sandbox()
    plan = decide(sbx, children(sbx, quota_error='pods "sbx-demo" is forbidden: exceeded quota'), at(0))
    assert created_kinds(plan) == []
    assert plan.status["phase"] == "Pending"
    assert condition(plan, c.ConditionType.READY)["reason"] == "QuotaExceeded"


@pytest.mark.parametrize(("refusal", "reason", "phase"), [
    ({"quota_error": 'networkpolicies "sbx-demo" is forbidden: exceeded quota'}, "QuotaExceeded", "Pending"),
    ({"create_error": 'networkpolicies "sbx-demo" is forbidden: denied'}, "CreateRejected", "Failed"),
])
def test_a_pod_whose_own_policy_was_refused_is_deleted(refusal: dict[str, str], reason: str, phase: str) -> None:
    """Created together with its policy behind the namespace fence, or its policy deleted since: no pod runs on the
    fence alone (or on nothing)."""
    sbx = sandbox()
    plan = decide(sbx, replace(children(sbx, running_pod(sbx)), network_policy=None, **refusal), at(10))
    assert [type(action) for action in plan.actions] == [CreateChild, DeleteChild]  # the policy is tried again
    assert plan.actions[1] == DeleteChild(c.ChildKind.POD, "sbx-demo")
    assert plan.status["phase"] == phase
    ready = condition(plan, c.ConditionType.READY)
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert "pod sbx-demo is deleted: no pod runs without its own NetworkPolicy" in ready["message"]


def test_a_refusal_of_another_child_leaves_a_pod_with_its_own_policy_running() -> None:
    sbx = sandbox({"network": {"ports": [{"name": "http", "port": 80}]}})
    observed = replace(children(sbx, running_pod(sbx)), service=None,
                       quota_error='services "sbx-demo" is forbidden: exceeded quota')
    plan = decide(sbx, observed, at(10))
    assert not any(isinstance(action, DeleteChild) for action in plan.actions)
    assert condition(plan, c.ConditionType.READY)["status"] == "True"


def test_invalid_body_reports_the_field_and_creates_nothing() -> None:
    raw = body({"resources": {"cpu": "lots"}})
    plan = decide(load_sandbox(raw), Observed(), at(0))
    assert plan.actions == ()
    ready = condition(plan, c.ConditionType.READY)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.resources.cpu" in ready["message"]
    assert plan.status["phase"] == "Failed"
    assert event_reasons(plan) == ["Failed"]


def test_sandbox_being_deleted_is_left_to_the_garbage_collector() -> None:
    sbx = sandbox(deletionTimestamp="2025-01-01T12:05:00Z")
    plan = decide(sbx, children(sbx, running_pod(sbx)), at(300))
    assert plan.actions == ()
    assert plan.status["phase"] == "Terminating"


def test_status_changed_ignores_keys_the_operator_does_not_own() -> None:
    sbx = sandbox()
    plan = decide(sbx, children(sbx, running_pod(sbx)), at(10))
    assert not status_changed(SandboxStatus, {**plan.status, "kopf": {"progress": {}}}, plan.status)
    assert status_changed(SandboxStatus, None, plan.status)
    assert status_changed(SandboxStatus, {**plan.status, "podIP": "10.0.0.1"}, plan.status)


def test_pod_summary_reads_a_pod_body() -> None:
    sbx = sandbox()
    pod = render_pod(sbx)
    pod["status"] = {
        "phase": "Failed",
        "podIP": "10.1.2.3",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {
                "name": "sandbox",
                "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "startedAt": "2025-01-01T12:00:05Z"}},
            }
        ],
    }
    summary = PodSummary.from_body(pod)
    assert summary.spec_hash == manifest_hash(render_pod(sbx))
    assert (summary.terminated_reason, summary.exit_code, summary.started_at) == ("OOMKilled", 137, at(5))


@settings(max_examples=100)
@given(strategies.specs())
def test_decisions_are_stable_for_every_valid_spec(spec: dict[str, Any]) -> None:
    sbx = SandboxObject.from_body(body(spec))
    observed = children(sbx, running_pod(sbx))
    settled = with_status(sbx, observed, at(10))
    again = decide(settled, observed, at(10))
    assert again.status == settled.status.to_dict()
    assert again.events == ()
