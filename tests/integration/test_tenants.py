"""Tenants on a real API server: quota and policy enforced at admission, access only to Sandboxes, clean deletion."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.handle import Cluster
from localcluster.operator_process import OperatorProcess

from sandbox_operator.api import names as c
from tests.integration.operators import active_and_standby, exclusive, reconciles
from tests.integration.tenant_helpers import (
    TenantHandle,
    api_error,
    install_tenant_policy,
    sandbox_body,
    tenant,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster
__all__ = ["exclusive"]  # a fixture, used by name


@pytest.fixture(scope="module", autouse=True)
def tenant_policy(cluster: Cluster, crds: None) -> None:
    """The ClusterRole and admission policy from deploy/, installed once."""
    install_tenant_policy(cluster)


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def gone(read: Any) -> bool:
    try:
        read()
    except ApiException as error:
        return error.status == 404
    return False


def test_tenant_gets_a_restricted_fenced_namespace_with_quota_limits_policy_and_access(
    api: client.ApiClient, operator: OperatorProcess
) -> None:
    subjects = [{"kind": "Group", "name": "team-x"}]
    began = time.monotonic()
    with tenant(api, subjects=subjects, limits={"cpu": "1"}, defaults={"cpu": "250m"}) as t:
        print(f"tenant Ready {time.monotonic() - began:.1f}s after its creation")
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        labels = core.read_namespace(t.namespace).metadata.labels
        assert {labels[f"pod-security.kubernetes.io/{mode}"] for mode in ("enforce", "audit", "warn")} == {
            "restricted"}
        hard = t.quota().spec.hard
        assert hard[c.QUOTA_SANDBOXES] == hard["pods"] == "5"
        assert hard["limits.cpu"] == hard["requests.cpu"] == "4"
        limit_range = core.read_namespaced_limit_range(c.TENANT_LIMIT_RANGE_NAME, t.namespace)
        assert limit_range.spec.limits[0].max["cpu"] == "1"
        assert limit_range.spec.limits[0].default["cpu"] == "250m"
        deny = client.NetworkingV1Api(api).read_namespaced_network_policy(c.TENANT_NETWORK_POLICY_NAME, t.namespace)
        assert deny.spec.pod_selector.match_labels is None and deny.spec.ingress is None and deny.spec.egress is None
        binding = rbac.read_namespaced_role_binding(c.TENANT_ROLE_BINDING_NAME, t.namespace)
        assert binding.role_ref.name == c.TENANT_CLUSTER_ROLE
        assert [(s.kind, s.name) for s in binding.subjects] == [("Group", "team-x")]
        exec_binding = rbac.read_namespaced_role_binding(c.TENANT_EXEC_ROLE_BINDING_NAME, t.namespace)
        assert exec_binding.role_ref.name == c.TENANT_EXEC_CLUSTER_ROLE and not exec_binding.subjects  # off by default
        policy_binding = client.AdmissionregistrationV1Api(api).read_validating_admission_policy_binding(
            f"{c.TENANT_POLICY_BINDING_PREFIX}{t.name}")
        assert policy_binding.spec.param_ref.name == t.name
        assert t.status()["usage"]["sandboxes"] == {"used": "0", "hard": "5"}


def test_fifty_concurrent_creators_get_exactly_max_sandboxes_with_two_operators(
    api: client.ApiClient, cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    second = OperatorProcess(cluster, tmp_path / "second-operator.log")
    second.start()
    try:
        quota = {"maxSandboxes": 10, "cpu": "10", "memory": "10Gi", "ephemeralStorage": "10Gi"}
        with tenant(api, quota=quota) as t:
            creators = 50
            clients = [cluster.api_client() for _ in range(creators)]
            start = threading.Barrier(creators)
            outcomes: list[int | str] = [0] * creators

            def create(index: int) -> None:
                custom = client.CustomObjectsApi(clients[index])
                start.wait()
                try:
                    custom.create_namespaced_custom_object(
                        c.GROUP, c.VERSION, t.namespace, c.PLURAL, sandbox_body(f"racer-{index:02d}"))
                    outcomes[index] = 201
                except ApiException as error:
                    outcomes[index] = error.status if "exceeded quota" in (error.body or "") else str(error.body)

            threads = [threading.Thread(target=create, args=(i,)) for i in range(creators)]
            began = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            elapsed = time.monotonic() - began
            print(f"50 concurrent creates against maxSandboxes 10 answered in {elapsed:.2f}s")

            assert outcomes.count(201) == 10
            assert outcomes.count(403) == 40, [o for o in outcomes if o not in (201, 403)]
            assert len(t.sandbox_names()) == 10
            for name in t.sandbox_names():
                t.wait_sandbox(name, "True", timeout=90)
            pods = client.CoreV1Api(api).list_namespaced_pod(t.namespace).items
            assert len(pods) == 10  # two operators, still one pod per sandbox
            wait_for(lambda: t.status()["usage"]["sandboxes"] == {"used": "10", "hard": "10"},
                     what="the tenant's usage to show 10 of 10")
    finally:
        second.stop()


# (field named in the refusal, a violating spec, the boundary spec that is accepted)
POLICY_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("spec.image", {"image": "busybox:latest"}, {"image": "docker.io/library/python:3.12-slim"}),
    ("spec.resources.cpu", {"resources": {"cpu": "1001m", "memory": "64Mi"}},
     {"resources": {"cpu": "1", "memory": "64Mi"}}),
    ("spec.resources.memory", {"resources": {"cpu": "100m", "memory": "1025Mi"}},
     {"resources": {"cpu": "100m", "memory": "1Gi"}}),
    ("spec.resources.ephemeralStorage", {"resources": {"cpu": "100m", "memory": "64Mi", "ephemeralStorage": "3Gi"}},
     {"resources": {"cpu": "100m", "memory": "64Mi", "ephemeralStorage": "2Gi"}}),
    ("spec.workspace.size", {"workspace": {"size": "2049Mi"}}, {"workspace": {"size": "2Gi"}}),
    ("spec.lifetime.ttlSeconds", {"lifetime": {"ttlSeconds": 3601}}, {"lifetime": {"ttlSeconds": 3600}}),
    ("spec.lifetime.expiresAt", {"lifetime": {"expiresAt": "+3700s"}}, {"lifetime": {"expiresAt": "+3500s"}}),
    ("spec.lifetime", {"lifetime": {"idleTimeoutSeconds": 60}},
     {"lifetime": {"idleTimeoutSeconds": 60, "ttlSeconds": 3600}}),
    ("spec.network.egress.mode", {"network": {"egress": {"mode": "Internet"}}}, {"network": {"egress": {}}}),
    ("spec.network.ports", {"network": {"ports": [{"name": "http", "port": 8080}]}}, {"network": {"ports": []}}),
    ("spec.network.egress.allow",
     {"network": {"egress": {"mode": "AllowList", "allow": [{"cidr": "203.0.112.0/23"}]}}},
     {"network": {"egress": {"mode": "AllowList", "allow": [{"cidr": "203.0.113.0/24"}]}}}),
    ("spec.runtimeClassName", {"runtimeClassName": "runc"}, {"runtimeClassName": "gvisor"}),
    ("spec.imagePullPolicy", {"imagePullPolicy": "IfNotPresent"}, {"imagePullPolicy": "Always"}),
]


def _with_times(spec: dict[str, Any]) -> dict[str, Any]:
    """Turn "+Ns" expiry times into absolute ones, counted from now."""
    lifetime = spec.get("lifetime") or {}
    if str(lifetime.get("expiresAt", "")).startswith("+"):
        seconds = int(lifetime["expiresAt"][1:-1])
        moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        spec = {**spec, "lifetime": {"expiresAt": rfc3339(moment)}}
    return spec


@pytest.fixture(scope="module")
def strict_tenant(cluster: Cluster, operator: OperatorProcess, tenant_policy: None) -> Any:
    """A tenant with every policy rule switched on."""
    limits = {"cpu": "1", "memory": "1Gi", "ephemeralStorage": "2Gi", "workspaceSize": "2Gi",
              "maxLifetimeSeconds": 3600}
    network = {"allowedEgressCIDRs": ["203.0.113.0/24"]}
    with tenant(cluster.api_client(), limits=limits, network=network, runtimeClassName="gvisor",
                requireImagePullAlways=True, allowedImages=["busybox:1.*", "docker.io/library/python:*"]) as t:
        yield t


@pytest.mark.parametrize(("field", "violating", "boundary"), POLICY_CASES, ids=[case[0] for case in POLICY_CASES])
def test_policy_refuses_a_violating_sandbox_naming_the_field_and_accepts_the_boundary(
    strict_tenant: TenantHandle, field: str, violating: dict[str, Any], boundary: dict[str, Any]
) -> None:
    base = {"image": "busybox:1.36", "runtimeClassName": "gvisor", "imagePullPolicy": "Always"}
    refused = api_error(lambda: strict_tenant.create_sandbox(
        sandbox_body("violating", **{**base, **_with_times(violating)}), dry_run=True))
    assert refused.status == 422
    assert f"denied request: {field}" in refused.body, refused.body
    assert f"(tenant {strict_tenant.name})" in refused.body
    strict_tenant.create_sandbox(sandbox_body("boundary", **{**base, **_with_times(boundary)}), dry_run=True)


def test_a_tightened_limit_does_not_block_metadata_updates_of_existing_sandboxes(
    strict_tenant: TenantHandle, operator: OperatorProcess
) -> None:
    body = sandbox_body("before-tightening", image="busybox:1.36", runtimeClassName="gvisor",
                        imagePullPolicy="Always", resources={"cpu": "1", "memory": "64Mi"})
    strict_tenant.create_sandbox(body)
    try:
        strict_tenant.patch({"limits": {"cpu": "500m"}})
        custom = strict_tenant.custom
        attempts = iter(range(1000))

        def spec_change_refused() -> ApiException | None:
            # The admission plugin sees the edited Tenant a moment after the write; until then a change goes through,
            # so each attempt changes the spec anew (the policy skips writes that leave the spec as it is).
            change = {"spec": {"args": [f"changed-{next(attempts)}"]}}
            try:
                custom.patch_namespaced_custom_object(
                    c.GROUP, c.VERSION, strict_tenant.namespace, c.PLURAL, "before-tightening", change)
            except ApiException as error:
                return error
            return None

        refused = wait_for(spec_change_refused, timeout=10, what="the spec change to be refused")
        assert "spec.resources.cpu 1 exceeds limits.cpu 500m" in refused.body
        touch = {"metadata": {"annotations": {c.ANNOTATION_LAST_ACTIVITY: rfc3339(dt.datetime.now(dt.UTC))}}}
        custom.patch_namespaced_custom_object(c.GROUP, c.VERSION, strict_tenant.namespace, c.PLURAL,
                                              "before-tightening", touch)
    finally:
        strict_tenant.patch({"limits": {"cpu": "1"}})
        strict_tenant.delete_sandbox("before-tightening")


def test_quota_edits_propagate_to_admission_and_status(api: client.ApiClient, operator: OperatorProcess) -> None:
    with tenant(api, quota={"maxSandboxes": 1}) as t:
        t.create_sandbox(sandbox_body("first"))
        refused = api_error(lambda: t.create_sandbox(sandbox_body("second")))
        assert refused.status == 403 and "exceeded quota" in refused.body
        assert f"limited: {c.QUOTA_SANDBOXES}=1" in refused.body

        t.patch({"quota": {"maxSandboxes": 2, "cpu": "3"}})
        wait_for(lambda: (t.quota().status.hard or {}).get(c.QUOTA_SANDBOXES) == "2", what="the quota's new limit")
        wait_for(lambda: t.status()["usage"]["sandboxes"] == {"used": "1", "hard": "2"}, what="status to follow")
        assert t.quota().spec.hard["limits.cpu"] == "3"
        t.create_sandbox(sandbox_body("second"))

        t.patch({"quota": {"maxSandboxes": 2, "cpu": None}})  # an unset total is no longer limited
        wait_for(lambda: "limits.cpu" not in t.quota().spec.hard, what="the cpu limit to be removed")


def test_status_usage_matches_the_resource_quota(api: client.ApiClient, operator: OperatorProcess) -> None:
    with tenant(api) as t:
        for index in range(3):
            t.create_sandbox(sandbox_body(f"user-{index}", resources={"cpu": "250m", "memory": "64Mi"}))
        for index in range(3):
            t.wait_sandbox(f"user-{index}", "True")

        def matches() -> dict[str, Any] | None:
            quota, usage = t.quota().status, t.status().get("usage") or {}
            expected = {
                "sandboxes": c.QUOTA_SANDBOXES, "pods": "pods", "cpu": "limits.cpu", "memory": "limits.memory",
                "ephemeralStorage": "limits.ephemeral-storage",
            }
            for name, resource in expected.items():
                if usage.get(name) != {"used": quota.used[resource], "hard": quota.hard[resource]}:
                    return None
            return usage

        usage = wait_for(matches, what="status usage to equal the ResourceQuota's")
        assert usage["sandboxes"]["used"] == usage["pods"]["used"] == "3"
        assert usage["cpu"]["used"] == "750m"
        assert usage["memory"]["used"] == "192Mi"


def test_quota_exceeded_sandbox_starts_after_another_is_deleted(
    api: client.ApiClient, operator: OperatorProcess
) -> None:
    with tenant(api, quota={"maxSandboxes": 5, "cpu": "1", "memory": "1Gi"}) as t:
        t.create_sandbox(sandbox_body("holder", resources={"cpu": "1", "memory": "64Mi"}))
        t.wait_sandbox("holder", "True")
        t.create_sandbox(sandbox_body("waiter", resources={"cpu": "1", "memory": "64Mi"}))
        blocked = t.wait_sandbox("waiter", "False", reason=c.Reason.QUOTA_EXCEEDED)
        assert "exceeded quota" in blocked["message"]
        assert "limits.cpu=1" in blocked["message"] and "used: limits.cpu=1" in blocked["message"]

        t.delete_sandbox("holder")
        began = time.monotonic()
        t.wait_sandbox("waiter", "True", timeout=90)
        print(f"blocked sandbox Ready {time.monotonic() - began:.1f}s after the holder's deletion")


def test_tenant_subject_manages_sandboxes_in_its_namespace_and_nothing_else(
    api: client.ApiClient, cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    with tenant(api, subjects=[{"kind": "Group", "name": "team-ours"}]) as ours, \
            tenant(api, subjects=[{"kind": "Group", "name": "team-theirs"}]) as theirs:
        kubeconfig = cluster.user_kubeconfig(tmp_path / "alice.kubeconfig", "alice", ("team-ours",))
        as_alice = cluster.api_client(kubeconfig)
        custom, core = client.CustomObjectsApi(as_alice), client.CoreV1Api(as_alice)

        custom.create_namespaced_custom_object(c.GROUP, c.VERSION, ours.namespace, c.PLURAL, sandbox_body("mine"))
        assert custom.get_namespaced_custom_object(c.GROUP, c.VERSION, ours.namespace, c.PLURAL, "mine")
        listed = custom.list_namespaced_custom_object(c.GROUP, c.VERSION, ours.namespace, c.PLURAL)["items"]
        assert [item["metadata"]["name"] for item in listed] == ["mine"]
        custom.patch_namespaced_custom_object(c.GROUP, c.VERSION, ours.namespace, c.PLURAL, "mine",
                                              {"spec": {"suspended": True}})
        custom.delete_namespaced_custom_object(c.GROUP, c.VERSION, ours.namespace, c.PLURAL, "mine")

        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "direct"},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        assert api_error(lambda: core.create_namespaced_pod(ours.namespace, pod)).status == 403
        assert api_error(lambda: core.list_namespaced_secret(ours.namespace)).status == 403
        assert api_error(lambda: core.read_namespaced_secret("anything", ours.namespace)).status == 403
        assert api_error(lambda: custom.create_namespaced_custom_object(
            c.GROUP, c.VERSION, theirs.namespace, c.PLURAL, sandbox_body("intruder"))).status == 403
        assert api_error(lambda: custom.list_namespaced_custom_object(
            c.GROUP, c.VERSION, theirs.namespace, c.PLURAL)).status == 403
        assert api_error(lambda: custom.patch_cluster_custom_object(
            c.GROUP, c.VERSION, c.TENANT_PLURAL, ours.name, {"spec": {"quota": {"maxSandboxes": 99}}})).status == 403


def test_exec_access_lets_the_subjects_run_commands_in_their_namespace_only_while_it_is_on(
    api: client.ApiClient, cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    with tenant(api, subjects=[{"kind": "Group", "name": "team-exec"}], execAccess=True) as ours:
        rbac = client.RbacAuthorizationV1Api(api)
        kubeconfig = cluster.user_kubeconfig(tmp_path / "bob.kubeconfig", "bob", ("team-exec",))
        as_bob = client.AuthorizationV1Api(cluster.api_client(kubeconfig))

        def exec_subjects() -> list[tuple[str, str]] | None:
            try:
                binding = rbac.read_namespaced_role_binding(c.TENANT_EXEC_ROLE_BINDING_NAME, ours.namespace)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            assert binding.role_ref.name == c.TENANT_EXEC_CLUSTER_ROLE
            return [(s.kind, s.name) for s in binding.subjects or []]

        def may(verb: str, resource: str, namespace: str, group: str = "") -> bool:
            """`kubectl auth can-i` as bob: a SelfSubjectAccessReview."""
            group_resource, _, subresource = resource.partition("/")
            review = as_bob.create_self_subject_access_review({"spec": {"resourceAttributes": {
                "verb": verb, "group": group, "resource": group_resource, "subresource": subresource,
                "namespace": namespace}}})
            return bool(review.status.allowed)

        wait_for(lambda: exec_subjects() == [("Group", "team-exec")], what="the exec binding to name the subjects")
        wait_for(lambda: may("create", "pods/exec", ours.namespace), what="bob to be allowed to exec")
        assert may("get", "pods/log", ours.namespace) and may("list", "pods", ours.namespace)
        assert not may("create", "pods/exec", "default")  # a RoleBinding: the tenant's namespace only
        assert not may("create", "pods", ours.namespace) and not may("delete", "pods", ours.namespace)
        assert not may("get", "secrets", ours.namespace)

        ours.patch({"execAccess": False})
        wait_for(lambda: exec_subjects() == [], what="the exec binding's subjects to be removed")
        wait_for(lambda: not may("create", "pods/exec", ours.namespace), what="bob's exec access to end")
        assert not may("get", "pods/log", ours.namespace) and not may("list", "pods", ours.namespace)
        assert may("create", "sandboxes", ours.namespace, c.GROUP)  # managing Sandboxes is unaffected


def test_policy_and_quota_hold_while_the_operator_is_down(api: client.ApiClient, operator: OperatorProcess) -> None:
    with tenant(api, quota={"maxSandboxes": 1}, limits={"cpu": "1"}) as t:
        operator.stop()
        try:
            refused = api_error(lambda: t.create_sandbox(sandbox_body("big", resources={"cpu": "2"})))
            assert refused.status == 422 and "spec.resources.cpu 2 exceeds limits.cpu 1" in refused.body
            t.create_sandbox(sandbox_body("only"))
            assert api_error(lambda: t.create_sandbox(sandbox_body("extra"))).status == 403
        finally:
            operator.start()
        t.wait_sandbox("only", "True")


def test_deleting_a_tenant_deletes_its_namespace_sandboxes_and_volumes(
    api: client.ApiClient, operator: OperatorProcess
) -> None:
    core = client.CoreV1Api(api)
    admission = client.AdmissionregistrationV1Api(api)
    with tenant(api, quota={"maxSandboxes": 5, "cpu": "4", "memory": "4Gi", "storage": "5Gi",
                            "persistentVolumeClaims": 2}) as t:
        t.create_sandbox(sandbox_body("keeper", workspace={"persistent": True, "size": "1Gi"}))
        t.create_sandbox(sandbox_body("runner"))
        t.wait_sandbox("runner", "True")
        wait_for(lambda: core.list_namespaced_persistent_volume_claim(t.namespace).items, what="the workspace PVC")
        t.delete()
        wait_for(lambda: gone(lambda: core.read_namespace(t.namespace)), timeout=180,
                 what="the namespace and everything in it to be deleted")
        assert gone(lambda: admission.read_validating_admission_policy_binding(
            f"{c.TENANT_POLICY_BINDING_PREFIX}{t.name}"))


def test_an_existing_namespace_is_never_adopted(
    api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    custom = client.CustomObjectsApi(api)
    body = {"apiVersion": c.API_VERSION, "kind": c.TENANT_KIND, "metadata": {"name": f"adopter-{namespace}"},
            "spec": {"namespace": namespace, "quota": {"maxSandboxes": 1}, "allowedImages": ["*"]}}
    custom.create_cluster_custom_object(c.GROUP, c.VERSION, c.TENANT_PLURAL, body)
    handle = TenantHandle(api, body["metadata"]["name"], namespace)
    try:
        def conflict() -> dict[str, Any] | None:
            conditions = handle.status().get("conditions") or []
            return next((x for x in conditions if x["reason"] == c.TenantReason.NAMESPACE_CONFLICT), None)

        assert "never adopted" in wait_for(conflict, what="NamespaceConflict")["message"]
        assert not client.CoreV1Api(api).read_namespace(namespace).metadata.owner_references
        assert client.CoreV1Api(api).list_namespaced_resource_quota(namespace).items == []
    finally:
        handle.delete()


def test_tenant_default_ttl_applies_to_a_sandbox_without_lifetime(
    api: client.ApiClient, operator: OperatorProcess
) -> None:
    with tenant(api, limits={"maxLifetimeSeconds": 3600}, defaults={"ttlSeconds": 600}) as t:
        created = t.create_sandbox(sandbox_body("defaulted", lifetime={}))
        created_at = dt.datetime.fromisoformat(created["metadata"]["creationTimestamp"].replace("Z", "+00:00"))

        def expires() -> str | None:
            return ((t.get_sandbox("defaulted") or {}).get("status") or {}).get("expiresAt")

        expires_at = wait_for(expires, timeout=20, what="status.expiresAt")
        assert dt.datetime.fromisoformat(expires_at.replace("Z", "+00:00")) - created_at == dt.timedelta(seconds=600)


def test_a_lowered_tenant_maximum_moves_its_running_sandboxes_deadlines_at_once(
    api: client.ApiClient, operator: OperatorProcess
) -> None:
    with tenant(api, limits={"maxLifetimeSeconds": 3600}) as t:
        created = t.create_sandbox(sandbox_body("capped", lifetime={"ttlSeconds": 3000}))
        created_at = dt.datetime.fromisoformat(created["metadata"]["creationTimestamp"].replace("Z", "+00:00"))

        def deadline_after(seconds: int) -> bool:
            expires = ((t.get_sandbox("capped") or {}).get("status") or {}).get("expiresAt")
            return expires is not None and dt.datetime.fromisoformat(
                expires.replace("Z", "+00:00")) - created_at == dt.timedelta(seconds=seconds)

        wait_for(lambda: deadline_after(3000), timeout=20, what="the Sandbox's own deadline")
        t.patch({"limits": {"maxLifetimeSeconds": 1200}})
        wait_for(lambda: deadline_after(1200), timeout=20, what="the deadline moved to the Tenant's new maximum")


def test_a_standby_that_takes_over_decides_tenant_sandboxes_with_their_tenants_rules_from_its_first_pass(
    cluster: Cluster, api: client.ApiClient, crds: None, exclusive: None, tmp_path: Path,
) -> None:
    """The Tenant is made while the standby stands by: its start-up never saw it, and its streams are paused. Once it
    takes over, the Tenants are listed before any Sandbox's pass, so no Sandbox's deadline moves for a moment without
    its Tenant's default TTL, and nothing is written for the unchanged Sandboxes. (When the Tenants came through a
    Kopf handler, the Sandboxes' passes ran before it, without the Tenant's rules.)"""
    lifetime = 10
    with active_and_standby(cluster, api, tmp_path, lifetime) as (active, standby), \
            tenant(api, limits={"maxLifetimeSeconds": 3600}, defaults={"ttlSeconds": 600}) as t:
        names = [f"kept-{index}" for index in range(5)]
        for name in names:
            t.create_sandbox(sandbox_body(name, lifetime={}))
        for name in names:
            t.wait_sandbox(name, "True")
        before = {name: t.get_sandbox(name) or {} for name in names}
        assert reconciles(standby) == 0
        active.stop(signal.SIGKILL)
        wait_for(lambda: reconciles(standby) > 0, timeout=lifetime + 30, interval=0.1,
                 what="the standby to take over")
        time.sleep(5)  # every listed Sandbox has had its pass
        for name in names:
            after = t.get_sandbox(name) or {}
            assert after["status"]["expiresAt"] == before[name]["status"]["expiresAt"], name
            assert after["metadata"]["resourceVersion"] == before[name]["metadata"]["resourceVersion"], name
        assert "could not" not in standby.log()


def test_a_tenants_deleted_objects_are_put_back_from_their_own_events_also_after_a_takeover(
    cluster: Cluster, api: client.ApiClient, crds: None, exclusive: None, tmp_path: Path,
) -> None:
    """A deleted RoleBinding, LimitRange or admission policy binding of a Tenant comes back from that object's own
    watch event, in seconds, not at the Tenant's 5-minute resync; and so it does from a standby that took over: its
    watches of those objects (Kopf's own watchers, paused while it stood by) come back with it."""
    lifetime = 10
    rbac, admission = client.RbacAuthorizationV1Api(api), client.AdmissionregistrationV1Api(api)
    with active_and_standby(cluster, api, tmp_path, lifetime) as (active, standby), tenant(api) as t:
        policy_binding = f"{c.TENANT_POLICY_BINDING_PREFIX}{t.name}"
        reads = (
            lambda: rbac.read_namespaced_role_binding(c.TENANT_ROLE_BINDING_NAME, t.namespace),
            lambda: t.core.read_namespaced_limit_range(c.TENANT_LIMIT_RANGE_NAME, t.namespace),
            lambda: admission.read_validating_admission_policy_binding(policy_binding),
        )

        def deleted_and_put_back(by: str) -> None:
            rbac.delete_namespaced_role_binding(c.TENANT_ROLE_BINDING_NAME, t.namespace)
            t.core.delete_namespaced_limit_range(c.TENANT_LIMIT_RANGE_NAME, t.namespace)
            admission.delete_validating_admission_policy_binding(policy_binding)
            wait_for(lambda: not any(gone(read) for read in reads), timeout=30,
                     what=f"the Tenant's RoleBinding, LimitRange and policy binding put back by {by}")

        deleted_and_put_back("the active replica")
        before = reconciles(standby)
        active.stop(signal.SIGKILL)
        wait_for(lambda: reconciles(standby) > before, timeout=lifetime + 30, interval=0.1,
                 what="the standby to take over")
        time.sleep(2)  # its passes at the resume are done
        deleted_and_put_back("the replica that took over")


def test_the_example_tenant_and_its_sandboxes_are_accepted(
    api: client.ApiClient, cluster: Cluster, operator: OperatorProcess
) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    tenant_file = examples / "tenant.yaml"
    cluster.kubectl("apply", "-f", str(tenant_file))
    handle = TenantHandle(api, "team-a", "team-a")
    try:
        wait_for(handle.ready, timeout=150, what="the example tenant Ready")
        applied = cluster.kubectl("apply", "--dry-run=server", "-f", str(examples / "tenant-sandboxes.yaml"))
        assert "scratch" in applied.stdout and "notebook" in applied.stdout
        oversized = (examples / "tenant-sandboxes.yaml").read_text().replace('cpu: "2" ', 'cpu: "3" ')
        too_big = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=oversized, check=False)
        assert too_big.returncode != 0 and "spec.resources.cpu 3 exceeds limits.cpu 2" in too_big.stderr
    finally:
        cluster.kubectl("delete", "--wait=false", "-f", str(tenant_file))
