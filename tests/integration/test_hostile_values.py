"""Whatever a user (or anyone with write access) puts in what the API server accepts, the operator still acts: times
out of range do not stop expiry, changed children are put back, names it does not own are never adopted, and values
from `env` never reach status or Events."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.handle import Cluster
from localcluster.operator_process import OperatorProcess

from sandbox_operator.api import names as c
from tests.integration.tenant_helpers import install_tenant_policy, sandbox_body, tenant
from tests.integration.test_sandbox_lifecycle import Sandboxes, sandbox
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

FAR_FUTURE = "9999-12-31T23:59:59Z"


@pytest.fixture
def sandboxes(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Sandboxes:
    return Sandboxes(api, namespace)


def ready_sandbox(sandboxes: Sandboxes, name: str, **spec: Any) -> dict[str, Any]:
    sandboxes.create(sandbox(name, **spec))
    sandboxes.wait_condition(name, "True", "PodReady")
    body = sandboxes.get(name)
    assert body is not None
    return body


def events(sandboxes: Sandboxes, name: str, reason: str) -> list[str]:
    found = sandboxes.core.list_namespaced_event(
        sandboxes.namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={c.KIND}").items
    return [e.message for e in found if e.reason == reason]


# --- times --------------------------------------------------------------------------------------------------------


def test_a_tenant_member_cannot_switch_off_expiry_with_a_far_future_activity_annotation(
    api: client.ApiClient, cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    install_tenant_policy(cluster)
    with tenant(api, subjects=[{"kind": "Group", "name": "team-clock"}], limits={"maxLifetimeSeconds": 3600}) as t:
        kubeconfig = cluster.user_kubeconfig(tmp_path / "mallory.kubeconfig", "mallory", ("team-clock",))
        member = client.CustomObjectsApi(cluster.api_client(kubeconfig))
        body = sandbox_body("clockwork", lifetime={"ttlSeconds": 25, "idleTimeoutSeconds": 60})
        created = member.create_namespaced_custom_object(c.GROUP, c.VERSION, t.namespace, c.PLURAL, body)
        t.wait_sandbox("clockwork", "True", "PodReady")
        member.patch_namespaced_custom_object(c.GROUP, c.VERSION, t.namespace, c.PLURAL, "clockwork", {
            "metadata": {"annotations": {c.ANNOTATION_LAST_ACTIVITY: FAR_FUTURE}}})
        born = dt.datetime.fromisoformat(created["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        wait_for(lambda: t.get_sandbox("clockwork") is None, timeout=60, interval=0.2, what="deletion at the TTL")
        gone_after = (dt.datetime.now(dt.UTC) - born).total_seconds()
        assert 25 <= gone_after < 35, f"deleted {gone_after:.1f}s after creation, TTL 25s"


def test_a_far_future_activity_counts_once_so_the_idle_timeout_still_runs_out(sandboxes: Sandboxes) -> None:
    ready_sandbox(sandboxes, "insomniac", lifetime={"idleTimeoutSeconds": 6})
    touched = dt.datetime.now(dt.UTC)
    sandboxes.patch("insomniac", {"metadata": {"annotations": {c.ANNOTATION_LAST_ACTIVITY: FAR_FUTURE}}})
    wait_for(lambda: sandboxes.get("insomniac") is None, timeout=40, interval=0.2, what="idle expiry")
    assert (dt.datetime.now(dt.UTC) - touched).total_seconds() >= 5


@pytest.mark.parametrize(
    ("expires_at", "accepted"),
    [
        ("9999-12-31T23:30:00-01:00", False),  # year 10000 in UTC
        ("9999-01-01T00:00:00Z", False),
        ("1969-12-31T23:59:59Z", False),
        ("9998-12-31T23:59:59Z", True),
        ("9998-12-31T12:00:00-11:59", True),
    ],
)
def test_expires_at_at_the_edge_of_the_range(sandboxes: Sandboxes, expires_at: str, accepted: bool) -> None:
    name = f"edge-{uuid.uuid4().hex[:6]}"
    body = sandbox(name, lifetime={"expiresAt": expires_at})
    if not accepted:
        with pytest.raises(ApiException) as refused:
            sandboxes.create(body)
        assert refused.value.status == 422
        assert "spec.lifetime.expiresAt" in refused.value.body and "must lie between" in refused.value.body
        return
    sandboxes.create(body)
    sandboxes.wait_condition(name, "True", "PodReady")
    assert sandboxes.status(name)["expiresAt"].startswith("9998-12-31T23:59:")


def test_the_name_rule_reports_metadata_name(sandboxes: Sandboxes) -> None:
    with pytest.raises(ApiException) as refused:
        sandboxes.create(sandbox("a" * 64))
    assert refused.value.status == 422
    assert "metadata.name" in refused.value.body and "<nil>" not in refused.value.body


# --- drift -------------------------------------------------------------------------------------------------------


def test_an_opened_network_policy_is_closed_again_with_a_warning(
    sandboxes: Sandboxes, operator: OperatorProcess
) -> None:
    ready_sandbox(sandboxes, "fenced")
    policies = sandboxes.networking
    rendered = policies.read_namespaced_network_policy("sbx-fenced", sandboxes.namespace).spec.to_dict()
    for patch in ({"spec": {"egress": [{}]}}, {"spec": {"ingress": [{}]}},
                  {"spec": {"podSelector": {"matchLabels": {"nothing": "selected"}}}}):
        before = time.monotonic()
        policies.patch_namespaced_network_policy("sbx-fenced", sandboxes.namespace, patch)

        def restored() -> bool:
            return bool(policies.read_namespaced_network_policy(
                "sbx-fenced", sandboxes.namespace).spec.to_dict() == rendered)

        wait_for(restored, timeout=20, interval=0.1, what=f"the policy restored after {patch}")
        print(f"{patch} undone in {time.monotonic() - before:.2f}s")
        time.sleep(2.5)  # past the hold after a repair: each tamper here is a separate one
    wait_for(lambda: len(events(sandboxes, "fenced", "Tampered")) >= 1, what="a Tampered event")
    assert "NetworkPolicy sbx-fenced was changed (spec)" in events(sandboxes, "fenced", "Tampered")[0]
    assert operator.metrics().get('sandbox_operator_child_repairs_total{kind="NetworkPolicy"}', 0) >= 3


def test_a_pod_given_another_image_is_replaced_and_the_reason_says_so(sandboxes: Sandboxes) -> None:
    ready_sandbox(sandboxes, "swapped")
    first = sandboxes.pod("swapped")
    assert first is not None
    sandboxes.core.patch_namespaced_pod("sbx-swapped", sandboxes.namespace, {"spec": {"containers": [
        {"name": c.CONTAINER_NAME, "image": "evil:latest"}]}})
    reasons: set[str] = set()

    def replaced() -> bool:
        cond = sandboxes.condition("swapped") or {}
        reasons.add(cond.get("reason", ""))
        pod = sandboxes.pod("swapped")
        return pod is not None and pod.metadata.uid != first.metadata.uid and cond.get("reason") == "PodReady"

    wait_for(replaced, timeout=40, interval=0.1, what="a new pod with the rendered image")
    pod = sandboxes.pod("swapped")
    assert pod is not None and pod.spec.containers[0].image == "busybox"
    messages = events(sandboxes, "swapped", "Tampered")
    assert messages and "spec.containers[sandbox].image" in messages[0], messages
    print(f"Ready reasons seen while it was replaced: {sorted(reasons)}")


def test_a_pod_that_lost_its_sandbox_label_is_seen_and_replaced(sandboxes: Sandboxes) -> None:
    ready_sandbox(sandboxes, "unlabelled")
    first = sandboxes.pod("unlabelled")
    assert first is not None
    sandboxes.core.patch_namespaced_pod("sbx-unlabelled", sandboxes.namespace,
                                        {"metadata": {"labels": {c.LABEL_SANDBOX: None, c.LABEL_MANAGED_BY: None}}})
    wait_for(lambda: (p := sandboxes.pod("unlabelled")) is not None and p.metadata.uid != first.metadata.uid,
             timeout=40, interval=0.1, what="a new, labelled pod")
    pod = sandboxes.pod("unlabelled")
    assert pod is not None and pod.metadata.labels[c.LABEL_SANDBOX] == "unlabelled"
    sandboxes.wait_condition("unlabelled", "True", "PodReady")
    assert any("metadata.labels" in m for m in events(sandboxes, "unlabelled", "Tampered"))


def test_a_service_pointed_elsewhere_is_pointed_back(sandboxes: Sandboxes) -> None:
    ready_sandbox(sandboxes, "served", network={"ports": [{"name": "http", "port": 8080}]})
    sandboxes.core.patch_namespaced_service("sbx-served", sandboxes.namespace,
                                            {"spec": {"selector": {"app": "database"}}})
    expected = {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_SANDBOX: "served"}
    wait_for(lambda: sandboxes.core.read_namespaced_service("sbx-served", sandboxes.namespace).spec.selector
             == expected, timeout=20, interval=0.1, what="the Service's selector restored")


def test_a_writer_fighting_the_operator_costs_a_few_writes_and_shows_in_a_metric(
    sandboxes: Sandboxes, operator: OperatorProcess
) -> None:
    ready_sandbox(sandboxes, "contested")
    rendered = sandboxes.networking.read_namespaced_network_policy("sbx-contested", sandboxes.namespace).spec.egress
    metric = 'sandbox_operator_api_requests_total{code="2xx",resource="NetworkPolicy",verb="update"}'
    before = operator.metrics().get(metric, 0)
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:  # the other writer puts its change back every 200 ms for 12 s
        sandboxes.networking.patch_namespaced_network_policy("sbx-contested", sandboxes.namespace,
                                                             {"spec": {"egress": [{}]}})
        time.sleep(0.2)
    writes = operator.metrics().get(metric, 0) - before
    print(f"{writes:.0f} repairs in 12 s of a fight")
    assert 1 <= writes <= 6
    assert operator.metrics().get('sandbox_operator_child_repair_conflicts_total{kind="NetworkPolicy"}', 0) >= 1
    # Once the other writer stops, the operator has the last word.
    wait_for(lambda: sandboxes.networking.read_namespaced_network_policy(
        "sbx-contested", sandboxes.namespace).spec.egress == rendered, timeout=30,
        what="the policy restored after the fight")


def test_a_name_taken_by_another_object_is_never_adopted_and_no_pod_runs(sandboxes: Sandboxes) -> None:
    squatter = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "sbx-squatted"},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}
    sandboxes.networking.create_namespaced_network_policy(sandboxes.namespace, squatter)
    sandboxes.create(sandbox("squatted"))
    failed = sandboxes.wait_condition("squatted", "False", c.Reason.NAME_CONFLICT)
    assert "NetworkPolicy sbx-squatted already exists" in failed["message"]
    assert sandboxes.pod("squatted") is None
    policy = sandboxes.networking.read_namespaced_network_policy("sbx-squatted", sandboxes.namespace)
    assert policy.metadata.owner_references is None, "the squatter's object is left as it was"


# --- messages ------------------------------------------------------------------------------------------------------


@pytest.fixture
def echoing_policy(api: client.ApiClient, namespace: str) -> Iterator[None]:
    """A ValidatingAdmissionPolicy that refuses pods in the test namespace with a message repeating an env value."""
    admission = client.AdmissionregistrationV1Api(api)
    name = f"echo-{namespace}"
    admission.create_validating_admission_policy({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                    "resources": ["pods"], "operations": ["CREATE"]}]},
            "validations": [{
                "expression": "!object.spec.containers.exists(c, has(c.env) && c.env.exists(e, has(e.value)))",
                "messageExpression": "'env ' + object.spec.containers[0].env[0].name + ' holds \"' + "
                                     "object.spec.containers[0].env[0].value + '\", which looks like a credential'",
            }],
        },
    })
    admission.create_validating_admission_policy_binding({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
    })
    core = client.CoreV1Api(api)
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
             "spec": {"containers": [{"name": "c", "image": "busybox", "env": [{"name": "X", "value": "y"}]}]}}

    def enforced() -> bool:  # bindings load asynchronously
        try:
            core.create_namespaced_pod(namespace, probe, dry_run="All")
        except ApiException as error:
            return "looks like a credential" in (error.body or "")
        return False

    wait_for(enforced, timeout=30, what="the echoing policy in force")
    try:
        yield
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)


SECRET = "sk-live-4f9c2a7e1b8d"


def test_an_admission_message_repeating_an_env_value_reaches_neither_status_nor_events(
    sandboxes: Sandboxes, echoing_policy: None, operator: OperatorProcess
) -> None:
    sandboxes.create(sandbox("leaky", env=[{"name": "API_KEY", "value": SECRET}]))
    refused = sandboxes.wait_condition("leaky", "False", c.Reason.CREATE_REJECTED)
    assert "looks like a credential" in refused["message"]
    wait_for(lambda: events(sandboxes, "leaky", "Failed"), what="the Failed event")
    status = str((sandboxes.get("leaky") or {}).get("status"))
    posted = str(sandboxes.core.list_namespaced_event(sandboxes.namespace).items)
    assert SECRET not in status and SECRET not in posted and SECRET not in operator.log()
