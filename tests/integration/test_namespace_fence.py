"""The namespace fence against a real API server: the first Sandbox of a namespace makes it, the next ones' pods are
created together with their own NetworkPolicy behind it, and a fence changed, deleted or held by somebody else's
object only sends pods back to policy-first (sandbox.fence)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client
from localcluster.operator_process import OperatorProcess

from sandbox_operator.api import names as c
from sandbox_operator.sandbox import handlers
from sandbox_operator.sandbox.fence import SETTLE_SECONDS, render_fence
from tests.integration.test_sandbox_lifecycle import Sandboxes, sandbox
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def sandboxes(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Sandboxes:
    return Sandboxes(api, namespace)


def creates(operator: OperatorProcess, sandboxes: Sandboxes, order: c.PodOrder) -> float:
    """This namespace's passes that created a cold pod ``order``'s way."""
    key = f'sandbox_operator_pod_creates_total{{namespace="{sandboxes.namespace}",order="{order}"}}'
    return operator.metrics().get(key, 0.0)


def live_fence(sandboxes: Sandboxes) -> Any:
    found = sandboxes.networking.list_namespaced_network_policy(
        sandboxes.namespace, field_selector=f"metadata.name={c.NAMESPACE_FENCE_NAME}").items
    return found[0] if found else None


def seen(operator: OperatorProcess, sandboxes: Sandboxes, fenced: float | None, what: str) -> None:
    """Wait until the operator's watch shows the namespace's fence so (its gauge: 1 as rendered, 0 changed, None
    gone): what the operator decides by runs a few milliseconds behind the API server's answers to the test."""
    key = f'sandbox_operator_namespace_fenced{{namespace="{sandboxes.namespace}"}}'
    wait_for(lambda: operator.metrics().get(key) == fenced, timeout=30, what=f"the operator's watch showing {what}")


def rendered_spec(sandboxes: Sandboxes) -> dict[str, Any]:
    """The fence's spec as the API server serves it (empty rule lists left out)."""
    return {key: value for key, value in render_fence(sandboxes.namespace)["spec"].items() if value != []}


def fence_as_rendered(sandboxes: Sandboxes) -> bool:
    fence = live_fence(sandboxes)
    return fence is not None and client.ApiClient().sanitize_for_serialization(fence.spec) == rendered_spec(sandboxes)


def ready(sandboxes: Sandboxes, name: str) -> None:
    sandboxes.create(sandbox(name))
    sandboxes.wait_condition(name, "True", "PodReady")
    assert sandboxes.children(name)["networkpolicies"] == [f"{c.CHILD_PREFIX}{name}"]


def test_the_first_sandbox_makes_the_fence_and_the_next_ones_pods_start_behind_it(
    sandboxes: Sandboxes, operator: OperatorProcess
) -> None:
    assert live_fence(sandboxes) is None
    policy_first = creates(operator, sandboxes, c.PodOrder.POLICY_FIRST)
    ready(sandboxes, "first")
    assert creates(operator, sandboxes, c.PodOrder.POLICY_FIRST) > policy_first  # more than once if a pass was retried
    wait_for(lambda: fence_as_rendered(sandboxes), what="the namespace fence as rendered")
    fence = live_fence(sandboxes)
    assert fence.metadata.labels[c.LABEL_MANAGED_BY] == c.MANAGED_BY
    assert not fence.metadata.owner_references  # no Sandbox's: it outlives each of them

    seen(operator, sandboxes, 1.0, "the fence")
    fenced = creates(operator, sandboxes, c.PodOrder.FENCED)
    ready(sandboxes, "second")
    assert creates(operator, sandboxes, c.PodOrder.FENCED) > fenced

    sandboxes.delete("first")
    sandboxes.delete("second")
    wait_for(lambda: not sandboxes.children("first")["pods"] and not sandboxes.children("second")["pods"],
             what="both pods gone")
    assert live_fence(sandboxes).metadata.uid == fence.metadata.uid  # it stays with no Sandbox left


def test_an_opened_fence_sends_pods_policy_first_and_is_put_back(
    sandboxes: Sandboxes, operator: OperatorProcess
) -> None:
    ready(sandboxes, "maker")
    wait_for(lambda: fence_as_rendered(sandboxes), what="the namespace fence as rendered")
    time.sleep(SETTLE_SECONDS)  # the next write to the fence waits this long after the last

    sandboxes.networking.patch_namespaced_network_policy(
        c.NAMESPACE_FENCE_NAME, sandboxes.namespace, {"spec": {"ingress": [{}]}})  # an empty rule lets all in
    seen(operator, sandboxes, 0.0, "the fence opened")
    policy_first = creates(operator, sandboxes, c.PodOrder.POLICY_FIRST)
    ready(sandboxes, "after-opened")
    assert creates(operator, sandboxes, c.PodOrder.POLICY_FIRST) > policy_first
    wait_for(lambda: fence_as_rendered(sandboxes), what="the fence put back")
    assert f"the namespace fence NetworkPolicy {sandboxes.namespace}/{c.NAMESPACE_FENCE_NAME} was changed: put back" \
        in operator.log()

    seen(operator, sandboxes, 1.0, "the fence put back")
    fenced = creates(operator, sandboxes, c.PodOrder.FENCED)
    ready(sandboxes, "fenced-again")
    assert creates(operator, sandboxes, c.PodOrder.FENCED) > fenced


def test_a_deleted_fence_sends_pods_policy_first_and_is_made_again(
    sandboxes: Sandboxes, operator: OperatorProcess
) -> None:
    ready(sandboxes, "maker")
    wait_for(lambda: fence_as_rendered(sandboxes), what="the namespace fence as rendered")
    time.sleep(SETTLE_SECONDS)  # the next write to the fence waits this long after the last
    first = live_fence(sandboxes).metadata.uid

    sandboxes.networking.delete_namespaced_network_policy(c.NAMESPACE_FENCE_NAME, sandboxes.namespace)
    wait_for(lambda: live_fence(sandboxes) is None, what="the fence gone")
    seen(operator, sandboxes, None, "the fence gone")
    policy_first = creates(operator, sandboxes, c.PodOrder.POLICY_FIRST)
    ready(sandboxes, "after-deleted")
    assert creates(operator, sandboxes, c.PodOrder.POLICY_FIRST) > policy_first
    wait_for(lambda: fence_as_rendered(sandboxes), what="the fence made again")
    assert live_fence(sandboxes).metadata.uid != first


def test_a_pod_whose_own_policy_is_refused_behind_the_fence_is_deleted(
    sandboxes: Sandboxes, operator: OperatorProcess
) -> None:
    """Created together with its pod, a Sandbox's policy is refused (a quota of two NetworkPolicies: the fence and the
    first Sandbox's): the pod goes at once, the Sandbox says why, and no pod comes back until its policy can be made."""
    sandboxes.core.create_namespaced_resource_quota(sandboxes.namespace, {
        "metadata": {"name": "two-policies"}, "spec": {"hard": {"count/networkpolicies.networking.k8s.io": "2"}}})
    wait_for(lambda: (sandboxes.core.read_namespaced_resource_quota("two-policies", sandboxes.namespace).status.hard
                      or None), what="the quota in force")
    ready(sandboxes, "first")
    wait_for(lambda: fence_as_rendered(sandboxes), what="the namespace fence as rendered")
    seen(operator, sandboxes, 1.0, "the fence")

    fenced = creates(operator, sandboxes, c.PodOrder.FENCED)
    sandboxes.create(sandbox("second"))
    refused = sandboxes.wait_condition("second", "False", "QuotaExceeded")
    assert creates(operator, sandboxes, c.PodOrder.FENCED) == fenced + 1  # its pod was made with the policy
    assert "exceeded quota" in refused["message"]  # first "...; pod sbx-second is deleted", then the retries' words

    def pod_going() -> bool:
        found = sandboxes.core.list_namespaced_pod(sandboxes.namespace, label_selector=f"{c.LABEL_SANDBOX}=second")
        return all(pod.metadata.deletion_timestamp for pod in found.items)

    wait_for(pod_going, timeout=10, what="the pod deleted")
    time.sleep(handlers.QUOTA_RETRY_SECONDS + 2)  # a retry: policy first now, so no pod is made
    assert sandboxes.children("second")["pods"] == []

    sandboxes.delete("first")  # its policy goes with it: room for the second's
    sandboxes.wait_condition("second", "True", "PodReady", timeout=90)
    assert sandboxes.children("second")["networkpolicies"] == ["sbx-second"]


def test_somebody_elses_policy_of_the_fence_name_is_left_alone(
    sandboxes: Sandboxes, operator: OperatorProcess
) -> None:
    theirs = sandboxes.networking.create_namespaced_network_policy(sandboxes.namespace, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": c.NAMESPACE_FENCE_NAME, "labels": {"team": "theirs"}},
        "spec": {"podSelector": {"matchLabels": {"team": "theirs"}}, "policyTypes": ["Ingress"]},
    })
    fenced = creates(operator, sandboxes, c.PodOrder.FENCED)
    for name in ("one", "two"):
        ready(sandboxes, name)
    assert creates(operator, sandboxes, c.PodOrder.FENCED) == fenced
    live = live_fence(sandboxes)
    assert (live.metadata.uid, live.metadata.resource_version) == (
        theirs.metadata.uid, theirs.metadata.resource_version)
    assert f"NetworkPolicy {sandboxes.namespace}/{c.NAMESPACE_FENCE_NAME} exists and is not the operator's" \
        in operator.log()
    assert operator.log().count(f"{sandboxes.namespace}/{c.NAMESPACE_FENCE_NAME}") == 1  # one try, then a wait
