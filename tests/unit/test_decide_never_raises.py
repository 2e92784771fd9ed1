"""No value the API server accepts stops the decision: arbitrary schema-valid specs, activity annotations, creation
times, stored statuses and observed children all give a plan whose status the API server would take."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import SandboxStatus, load_sandbox
from sandbox_operator.api.schema import format_time
from sandbox_operator.k8s.manifest import ChildSummary
from sandbox_operator.sandbox.decide import Observed, PodSummary, decide, decide_safely
from tests.unit import strategies
from tests.unit.builders import body

moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
owned_views = st.none() | st.dictionaries(
    st.sampled_from(["metadata", "spec", "extra"]), json_values, max_size=3
)
pods = st.builds(
    PodSummary,
    name=st.sampled_from(["sbx-demo", "sbx-other", ""]),
    phase=st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown", "weird"]),
    ready=st.booleans(),
    pod_ip=st.none() | st.sampled_from(["10.244.0.7", "fd00::7"]),
    started_at=st.none() | moments,
    deletion_timestamp=st.none() | moments,
    spec_hash=st.none() | st.text(max_size=16),
    reason=st.none() | st.text(max_size=20),
    message=st.none() | st.text(max_size=40),
    unschedulable_message=st.none() | st.text(max_size=20),
    waiting_reason=st.none() | st.sampled_from(["ContainerCreating", "ErrImagePull", "CreateContainerError", "x"]),
    waiting_message=st.none() | st.text(max_size=20),
    terminated_reason=st.none() | st.sampled_from(["OOMKilled", "Error", "Completed"]),
    exit_code=st.none() | st.integers(-(2**31), 2**31),
    owned=owned_views,
)
children = st.builds(ChildSummary, name=st.text(max_size=12), spec_hash=st.none() | st.text(max_size=16),
                     owned=owned_views)
observed_children = st.builds(
    Observed,
    pod=st.none() | pods,
    network_policy=st.none() | children,
    service=st.none() | children,
    pvc=st.none() | children,
    quota_error=st.none() | st.text(max_size=30),
    create_error=st.none() | st.text(max_size=30),
    name_conflict=st.none() | st.text(max_size=30),
    first_seen=st.dictionaries(moments, moments, max_size=2),
    held=st.dictionaries(st.sampled_from(list(c.ChildKind)), moments, max_size=2),
)
statuses = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "phase": st.sampled_from(["Ready", "Pending", "Failed"]),
            "expiresAt": strategies.expires_at_texts,
            "startedAt": strategies.expires_at_texts,
            "lastActivityAt": strategies.expires_at_texts,
            "conditions": st.lists(
                st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(["Ready", "Expired"]),
                        "status": st.sampled_from(["True", "False"]),
                        "reason": st.sampled_from(["PodReady", "ReconcileError"]),
                        "lastTransitionTime": strategies.expires_at_texts,
                    }
                ),
                max_size=2,
            ),
        },
    ),
    json_values,
)


@st.composite
def sandbox_bodies(draw: st.DrawFn) -> dict[str, Any]:
    raw = body(
        draw(strategies.specs()),
        creationTimestamp=format_time(draw(st.datetimes(min_value=datetime(1970, 1, 1),
                                                         max_value=datetime(9998, 12, 31), timezones=st.just(UTC)))),
        annotations={c.ANNOTATION_LAST_ACTIVITY: draw(strategies.activity_annotations)},
    )
    raw["status"] = draw(statuses)
    return raw


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sandbox_bodies(), observed_children, moments)
def test_decide_never_raises_and_its_status_is_one_the_api_server_takes(
    raw: dict[str, Any], observed: Observed, now: datetime
) -> None:
    plan = decide(load_sandbox(raw), observed, now)
    SandboxStatus.model_validate(plan.status)
    json.dumps(plan.status)
    assert all(len(event.message) <= c.MAX_MESSAGE_LENGTH * 2 for event in plan.events)


@settings(max_examples=100, deadline=None)
@given(sandbox_bodies(), moments)
def test_the_fallback_plan_never_raises_either(raw: dict[str, Any], now: datetime) -> None:
    def broken() -> Any:
        raise RuntimeError("a bug")

    plan, error = decide_safely(broken, raw, Observed(), now)
    assert isinstance(error, RuntimeError)
    ready = next(cond for cond in plan.status["conditions"] if cond["type"] == "Ready")
    assert ready["reason"] == c.Reason.RECONCILE_ERROR
    SandboxStatus.model_validate(plan.status)
