"""Pure functions from a Tenant to the manifests the operator creates for it, and the ClusterRoles shipped in deploy/.

For each Tenant: its Namespace (Pod Security `restricted`), a ResourceQuota, a LimitRange, a default-deny
NetworkPolicy, the ValidatingAdmissionPolicyBinding tying the tenant policy to the namespace, a RoleBinding of the
tenant's subjects to the Sandbox ClusterRole, and one to the exec ClusterRole (with no subjects unless the Tenant sets
execAccess). Every one carries an owner reference to the Tenant, so deleting the Tenant lets the garbage collector
delete the namespace (and with it every Sandbox, pod and volume) and the binding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.api.tenant import QUOTA_RESOURCES, Subject, TenantObject, quota_total
from sandbox_operator.k8s.manifest import child_metadata, controller_name, owner_reference, with_spec_hash

RBAC_GROUP = "rbac.authorization.k8s.io"


def tenant_labels(tenant: TenantObject) -> dict[str, str]:
    """Labels on everything rendered for a tenant; the tenant label is how child events find their Tenant."""
    return {c.LABEL_NAME: c.TENANT_NAME, c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_TENANT: tenant.name}


def owning_tenant(child: Mapping[str, Any]) -> str | None:
    """The name of the Tenant an object was rendered for: the Tenant its controller owner reference names, else its
    tenant label when it carries the operator's labels (so one whose labels were removed is still found)."""
    owner = controller_name(child, c.TENANT_KIND)
    labels = (child.get("metadata") or {}).get("labels") or {}
    if owner is None and labels.get(c.LABEL_MANAGED_BY) == c.MANAGED_BY and labels.get(c.LABEL_TENANT):
        owner = str(labels[c.LABEL_TENANT])
    return owner


def policy_binding_name(tenant: TenantObject) -> str:
    """Name of the tenant's ValidatingAdmissionPolicyBinding (cluster-scoped, so it carries the tenant's name)."""
    return f"{c.TENANT_POLICY_BINDING_PREFIX}{tenant.name}"


def _metadata(tenant: TenantObject, name: str, namespace: str | None) -> dict[str, Any]:
    owner = owner_reference(c.TENANT_KIND, tenant.name, tenant.uid)
    return child_metadata(name, namespace, tenant_labels(tenant), owner)


def _strings(values: Mapping[str, int | str | None]) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


def render_namespace(tenant: TenantObject) -> dict[str, Any]:
    """The tenant's namespace, labelled for Pod Security `restricted` in every mode."""
    meta = _metadata(tenant, tenant.spec.namespace, None)
    for mode in c.POD_SECURITY_MODES:
        meta["labels"][f"pod-security.kubernetes.io/{mode}"] = c.POD_SECURITY_LEVEL
        meta["labels"][f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    return with_spec_hash({"apiVersion": "v1", "kind": c.TenantChildKind.NAMESPACE.value, "metadata": meta})


def quota_hard(tenant: TenantObject) -> dict[str, str]:
    """The ResourceQuota's `hard`: the Sandbox count, one pod and at most one ClusterIP Service per Sandbox, and
    whichever totals the tenant sets. Requests and limits share each total (a sandbox's requests never exceed its
    limits, so the limits are what binds)."""
    quota = tenant.spec.quota
    hard: dict[str, int | str | None] = {
        resource: quota_total(quota, row) for row in QUOTA_RESOURCES for resource in row.resources
    }
    hard |= {c.QUOTA_SERVICES: quota.max_sandboxes, c.QUOTA_LOAD_BALANCERS: 0, c.QUOTA_NODE_PORTS: 0}
    return _strings(hard)


def render_resource_quota(tenant: TenantObject) -> dict[str, Any]:
    """The ResourceQuota the API server enforces atomically at admission."""
    return with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": c.TenantChildKind.RESOURCE_QUOTA.value,
            "metadata": _metadata(tenant, c.TENANT_QUOTA_NAME, tenant.spec.namespace),
            "spec": {"hard": quota_hard(tenant)},
        }
    )


def render_limit_range(tenant: TenantObject) -> dict[str, Any]:
    """The LimitRange: per-container maximums (a second fence behind the admission policy, at pod creation) and the
    defaults for a container that sets none."""
    limits, defaults = tenant.spec.limits, tenant.spec.defaults
    maximum = _strings({"cpu": limits.cpu, "memory": limits.memory, "ephemeral-storage": limits.ephemeral_storage})
    default = _strings(
        {"cpu": defaults.cpu, "memory": defaults.memory, "ephemeral-storage": defaults.ephemeral_storage}
    )
    container: dict[str, Any] = {"type": "Container"}
    if maximum:
        container["max"] = maximum
    if default:
        container["default"] = default
        container["defaultRequest"] = dict(default)
    items = [container]
    if limits.workspace_size is not None:
        items.append({"type": "PersistentVolumeClaim", "max": {"storage": str(limits.workspace_size)}})
    return with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": c.TenantChildKind.LIMIT_RANGE.value,
            "metadata": _metadata(tenant, c.TENANT_LIMIT_RANGE_NAME, tenant.spec.namespace),
            "spec": {"limits": items},
        }
    )


def render_default_deny(tenant: TenantObject) -> dict[str, Any]:
    """A NetworkPolicy selecting every pod in the namespace with no rules: nothing in or out unless a sandbox's own
    policy allows it."""
    return with_spec_hash(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": c.TenantChildKind.NETWORK_POLICY.value,
            "metadata": _metadata(tenant, c.TENANT_NETWORK_POLICY_NAME, tenant.spec.namespace),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        }
    )


def _rbac_subject(subject: Subject) -> dict[str, str]:
    if subject.kind is c.SubjectKind.SERVICE_ACCOUNT:
        return {"kind": subject.kind.value, "name": subject.name, "namespace": str(subject.namespace)}
    return {"kind": subject.kind.value, "name": subject.name, "apiGroup": RBAC_GROUP}


def _role_binding(tenant: TenantObject, name: str, cluster_role: str, subjects: list[Subject]) -> dict[str, Any]:
    return with_spec_hash(
        {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": c.TenantChildKind.ROLE_BINDING.value,
            "metadata": _metadata(tenant, name, tenant.spec.namespace),
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
            "subjects": [_rbac_subject(subject) for subject in subjects],
        }
    )


def render_role_binding(tenant: TenantObject) -> dict[str, Any]:
    """The RoleBinding of the tenant's subjects to the ClusterRole that manages Sandboxes and nothing else."""
    return _role_binding(tenant, c.TENANT_ROLE_BINDING_NAME, c.TENANT_CLUSTER_ROLE, tenant.spec.subjects)


def render_exec_role_binding(tenant: TenantObject) -> dict[str, Any]:
    """The RoleBinding of the tenant's subjects to the exec ClusterRole: always rendered, with no subjects (granting
    nothing) unless the Tenant sets execAccess, so turning it off is an apply like any other (no deletion, and the
    immutable roleRef never changes)."""
    subjects = tenant.spec.subjects if tenant.spec.exec_access else []
    return _role_binding(tenant, c.TENANT_EXEC_ROLE_BINDING_NAME, c.TENANT_EXEC_CLUSTER_ROLE, subjects)


def render_policy_binding(tenant: TenantObject) -> dict[str, Any]:
    """The binding that applies the tenant policy, with this Tenant as its parameters, to this tenant's namespace.

    `kubernetes.io/metadata.name` is set by the API server and cannot be forged by whoever may label namespaces. With
    `parameterNotFoundAction: Deny`, Sandboxes are refused once the Tenant is gone.
    """
    return with_spec_hash(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": c.TenantChildKind.POLICY_BINDING.value,
            "metadata": _metadata(tenant, policy_binding_name(tenant), None),
            "spec": {
                "policyName": c.TENANT_POLICY_NAME,
                "paramRef": {"name": tenant.name, "parameterNotFoundAction": "Deny"},
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {c.NAMESPACE_NAME_LABEL: tenant.spec.namespace}}
                },
                "validationActions": ["Deny"],
            },
        }
    )


def render_tenant_cluster_role() -> dict[str, Any]:
    """The ClusterRole shipped in deploy/ that tenant subjects are bound to: Sandboxes, and reading the templates and
    pools the platform team provides (writing them stays with the platform: warm pods use the tenant's quota)."""
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": c.TENANT_CLUSTER_ROLE, "labels": {c.LABEL_NAME: c.MANAGED_BY}},
        "rules": [
            {
                "apiGroups": [c.GROUP],
                "resources": [c.PLURAL],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"],
            },
            {"apiGroups": [c.GROUP], "resources": [f"{c.PLURAL}/status"], "verbs": ["get"]},
            {
                "apiGroups": [c.GROUP],
                "resources": [c.TEMPLATE_PLURAL, c.POOL_PLURAL],
                "verbs": ["get", "list", "watch"],
            },
        ],
    }


def render_tenant_exec_cluster_role() -> dict[str, Any]:
    """The ClusterRole shipped in deploy/ that a tenant's subjects are bound to when it sets execAccess: read pods and
    their logs and run commands in them (bound by a RoleBinding, so in the tenant's namespace only)."""
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": c.TENANT_EXEC_CLUSTER_ROLE, "labels": {c.LABEL_NAME: c.MANAGED_BY}},
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            # The exec upgrade is authorised as `create` by newer API servers and as `get` by older ones (WebSocket).
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ],
    }


def render_admission_probe(tenant: TenantObject) -> dict[str, Any]:
    """The Sandbox the operator dry-runs in the tenant's namespace: the tenant policy refuses it by its label, which
    proves the policy is in effect there. Never stored (dryRun=All)."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {
            "name": "admission-probe",
            "namespace": tenant.spec.namespace,
            "labels": {c.LABEL_ADMISSION_PROBE: "true", c.LABEL_MANAGED_BY: c.MANAGED_BY},
        },
        "spec": {"image": "admission-probe"},
    }
