"""The operator works with exactly the chart's ClusterRole: no request refused, Sandboxes and Tenants Ready."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.handle import Cluster
from localcluster.helm import find, template
from localcluster.operator_process import OperatorProcess

from tests.integration.operators import (
    cluster_peering,
    create_sandbox,
    exclusive,
    forbidden_lines,
    wait_ready,
)
from tests.integration.tenant_helpers import READY_TIMEOUT, install_tenant_policy, tenant
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster
__all__ = ["exclusive"]  # a fixture, used by name


@pytest.fixture
def chart_role_user(cluster: Cluster, api: client.ApiClient, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig for a fresh user bound to a copy of the chart's ClusterRole, and to nothing else."""
    name = f"test-operator-{uuid.uuid4().hex[:8]}"
    role = find(template(), "ClusterRole", "sbx-sandbox-operator")
    role["metadata"] = {"name": name}
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role(role)
    rbac.create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}],
    })
    # The chart's guard policy too, aimed at this user instead of the chart's ServiceAccount.
    guard = [o for o in template() if o["metadata"]["name"].endswith("-operator-guard")]
    policy, binding = (next(o for o in guard if o["kind"] == kind) for kind in (
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"))
    policy["metadata"] = {"name": name}
    who = f"request.userInfo.username == '{name}'"
    policy["spec"]["matchConditions"] = [{"name": "the-operator", "expression": who}]
    binding["metadata"] = {"name": name}
    binding["spec"]["policyName"] = name
    admission = client.AdmissionregistrationV1Api(api)
    admission.create_validating_admission_policy(policy)
    admission.create_validating_admission_policy_binding(binding)
    try:
        yield cluster.user_kubeconfig(tmp_path / "operator.kubeconfig", name)
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)


def test_operator_with_only_the_chart_cluster_role_makes_sandboxes_and_tenants_ready(
    cluster: Cluster, api: client.ApiClient, crds: None, namespace: str, chart_role_user: Path,
    exclusive: None, tmp_path: Path,
) -> None:
    user = client.AuthorizationV1Api(cluster.api_client(chart_role_user))
    review = user.create_self_subject_access_review({"spec": {"resourceAttributes": {
        "verb": "get", "resource": "secrets", "namespace": namespace}}})
    assert review.status.allowed is False, "the test user must hold the chart's role only"
    install_tenant_policy(cluster)
    with cluster_peering(api) as peering:
        process = OperatorProcess(cluster, tmp_path / "operator.log", kubeconfig=chart_role_user,
                                  STANDALONE="false", PEERING_NAME=peering, PRIORITY="10")
        process.start()
        try:
            create_sandbox(api, namespace, "least-privilege")
            wait_ready(api, namespace, ["least-privilege"])
            # namespace, quota, limits, policy binding, RoleBinding (needs bind), the dry-run admission probe
            with tenant(api, wait=False) as made:
                try:
                    wait_for(made.ready, timeout=READY_TIMEOUT, what="tenant Ready")
                except pytest.fail.Exception:
                    pytest.fail(f"tenant not Ready: {made.status().get('conditions')}")
            assert forbidden_lines(process) == []
            # This process, with only the chart's role, sent authorised writes. Another operator may share the
            # cluster and win the race (409): authorisation comes before that check, so any answer but 403 counts.
            samples = process.metrics()
            for verb, resource in (("create", "Pod"), ("patch", "Sandbox/status")):
                answered = {re.search(r'code="([^"]*)"', k).group(1): v for k, v in samples.items()  # type: ignore[union-attr]
                            if k.startswith("sandbox_operator_api_requests_total{")
                            and f'verb="{verb}"' in k and f'resource="{resource}"' in k}
                assert sum(v for code, v in answered.items() if code != "403") >= 1, (verb, resource, answered)
        finally:
            process.stop()


def test_the_operators_account_cannot_change_what_it_does_not_manage(
    api: client.ApiClient, cluster: Cluster, namespace: str, chart_role_user: Path
) -> None:
    as_operator = cluster.api_client(chart_role_user)
    core, rbac = client.CoreV1Api(as_operator), client.RbacAuthorizationV1Api(as_operator)
    binding = "someone-elses"
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(namespace, {
        "metadata": {"name": binding},
        # The role the operator may bind (tenant access), so RBAC's escalation check lets the write reach the guard.
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sandbox-operator-tenant"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    })

    lowered = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}

    def guard_in_force() -> bool:
        # The API server loads a new policy asynchronously: probe with a dry run (admission runs, nothing is stored).
        try:
            core.patch_namespace(namespace, lowered, dry_run="All")
        except ApiException as error:
            return error.status == 403
        return False

    wait_for(guard_in_force, timeout=30, what="the guard policy to be in force")

    def refused(call: Any) -> str:
        with pytest.raises(ApiException) as error:
            call()
        assert error.value.status == 403
        return str(error.value.body)

    assert "may write only objects it manages" in refused(lambda: core.patch_namespace(namespace, lowered))
    claimed = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "sandbox-operator"}}}
    assert "may write only objects it manages" in refused(lambda: core.patch_namespace(namespace, claimed))
    widened = {"subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]}
    assert "may write only objects it manages" in refused(
        lambda: rbac.patch_namespaced_role_binding(binding, namespace, widened))
    labels = core.read_namespace(namespace).metadata.labels or {}
    assert "pod-security.kubernetes.io/enforce" not in labels and "app.kubernetes.io/managed-by" not in labels
    subjects = client.RbacAuthorizationV1Api(api).read_namespaced_role_binding(binding, namespace).subjects
    assert [s.name for s in subjects] == ["alice"]
