"""What the operator renders for a Tenant: a restricted, fenced namespace with quota, limits, policy and access."""

from __future__ import annotations

import kubernetes_validate
import pytest

from sandbox_operator.api import names as c
from sandbox_operator.tenant.render import (
    quota_hard,
    render_default_deny,
    render_exec_role_binding,
    render_limit_range,
    render_namespace,
    render_policy_binding,
    render_resource_quota,
    render_role_binding,
    render_tenant_cluster_role,
    render_tenant_exec_cluster_role,
)
from tests.unit.tenant_builders import UID, tenant


def test_namespace_enforces_audits_and_warns_restricted_and_is_owned_by_the_tenant() -> None:
    namespace = render_namespace(tenant())
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert labels[c.LABEL_TENANT] == "team-a"
    [owner] = namespace["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Tenant", UID, True)


def test_quota_counts_sandboxes_pods_and_shares_totals_between_requests_and_limits() -> None:
    hard = quota_hard(tenant())
    assert hard[c.QUOTA_SANDBOXES] == hard["pods"] == hard["services"] == "10"
    assert hard["requests.cpu"] == hard["limits.cpu"] == "8"
    assert hard["requests.memory"] == hard["limits.memory"] == "16Gi"
    assert hard["requests.storage"] == "100Gi"
    assert hard["persistentvolumeclaims"] == "5"
    assert hard["services.loadbalancers"] == hard["services.nodeports"] == "0"
    assert "requests.ephemeral-storage" not in hard  # unset totals are not limited


def test_limit_range_has_maximums_and_defaults() -> None:
    container, pvc = render_limit_range(tenant())["spec"]["limits"]
    assert container["max"] == {"cpu": "2", "memory": "4Gi"}
    assert container["default"] == container["defaultRequest"] == {"cpu": "500m", "memory": "512Mi"}
    assert pvc == {"type": "PersistentVolumeClaim", "max": {"storage": "20Gi"}}


def test_limit_range_without_limits_or_defaults_has_a_bare_container_item() -> None:
    spec = render_limit_range(tenant({"limits": {}, "defaults": {}}))["spec"]
    assert spec == {"limits": [{"type": "Container"}]}


def test_default_deny_selects_every_pod_and_allows_nothing() -> None:
    spec = render_default_deny(tenant())["spec"]
    assert spec == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_role_binding_binds_the_subjects_to_the_sandbox_only_cluster_role() -> None:
    binding = render_role_binding(tenant())
    assert binding["roleRef"]["name"] == c.TENANT_CLUSTER_ROLE
    assert binding["subjects"] == [
        {"kind": "Group", "name": "team-a", "apiGroup": "rbac.authorization.k8s.io"},
        {"kind": "ServiceAccount", "name": "ci", "namespace": "ci"},
    ]


def test_exec_binding_has_no_subjects_unless_the_tenant_grants_exec_access() -> None:
    binding = render_exec_role_binding(tenant())
    assert binding["metadata"]["name"] == c.TENANT_EXEC_ROLE_BINDING_NAME
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["roleRef"]["name"] == c.TENANT_EXEC_CLUSTER_ROLE
    assert binding["subjects"] == []
    granted = render_exec_role_binding(tenant({"execAccess": True}))
    assert granted["subjects"] == render_role_binding(tenant())["subjects"]
    assert granted["roleRef"] == binding["roleRef"]  # roleRef is immutable: turning exec access on is an apply


def test_policy_binding_passes_this_tenant_to_the_policy_for_its_namespace_only() -> None:
    spec = render_policy_binding(tenant())["spec"]
    assert spec["policyName"] == c.TENANT_POLICY_NAME
    assert spec["paramRef"] == {"name": "team-a", "parameterNotFoundAction": "Deny"}
    assert spec["matchResources"]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "team-a"}}
    assert spec["validationActions"] == ["Deny"]


def test_cluster_role_grants_sandboxes_and_reading_templates_and_pools_and_nothing_else() -> None:
    rules = render_tenant_cluster_role()["rules"]
    granted = {(resource, verb) for rule in rules for resource in rule["resources"] for verb in rule["verbs"]}
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    assert {resource for resource, _ in granted} == {"sandboxes", "sandboxes/status", "sandboxtemplates",
                                                     "sandboxpools"}
    assert not {(resource, verb) for resource, verb in granted if resource != "sandboxes" and verb in writes}, \
        "templates and pools (warm pods use the tenant's quota) are written by the platform team only"
    assert all(rule["apiGroups"] == [c.GROUP] for rule in rules)


def test_exec_cluster_role_grants_commands_and_logs_in_pods_and_nothing_else() -> None:
    rules = render_tenant_exec_cluster_role()["rules"]
    granted = {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == {
        ("", "pods", "get"), ("", "pods", "list"), ("", "pods", "watch"),
        ("", "pods/exec", "create"), ("", "pods/exec", "get"), ("", "pods/log", "get"),
    }
    # Only namespaced resources, so the RoleBinding confines it to the tenant's namespace.
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in rules)


def test_a_changed_spec_changes_the_hash_of_what_it_affects_only() -> None:
    before, after = tenant(), tenant({"quota": {"maxSandboxes": 11}})
    hash_of = lambda m: m["metadata"]["annotations"][c.ANNOTATION_SPEC_HASH]  # noqa: E731
    assert hash_of(render_resource_quota(before)) != hash_of(render_resource_quota(after))
    assert hash_of(render_limit_range(before)) == hash_of(render_limit_range(after))


@pytest.mark.parametrize(
    "render",
    [render_namespace, render_resource_quota, render_limit_range, render_default_deny, render_role_binding,
     render_exec_role_binding, render_policy_binding],
)
def test_rendered_objects_are_valid_kubernetes(render: object) -> None:
    manifest = render(tenant())  # type: ignore[operator]
    kubernetes_validate.validate(manifest, "1.34", strict=True)
