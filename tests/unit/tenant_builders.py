"""Builders of Tenant bodies and observed objects for the unit tests."""

from __future__ import annotations

from typing import Any

from sandbox_operator.api.schema import format_time
from sandbox_operator.api.tenant import TenantObject, load_tenant
from sandbox_operator.k8s.manifest import ChildSummary
from sandbox_operator.tenant.decide import NamespaceSummary, QuotaSummary, TenantObserved
from sandbox_operator.tenant.render import (
    render_default_deny,
    render_exec_role_binding,
    render_limit_range,
    render_namespace,
    render_policy_binding,
    render_resource_quota,
    render_role_binding,
)
from tests.unit.builders import CREATED

UID = "7e7e7e7e-0000-4000-8000-000000000001"
SPEC: dict[str, Any] = {
    "namespace": "team-a",
    "subjects": [{"kind": "Group", "name": "team-a"}, {"kind": "ServiceAccount", "name": "ci", "namespace": "ci"}],
    "quota": {"maxSandboxes": 10, "cpu": "8", "memory": "16Gi", "storage": "100Gi", "persistentVolumeClaims": 5},
    "limits": {"cpu": "2", "memory": "4Gi", "workspaceSize": "20Gi", "maxLifetimeSeconds": 86400},
    "defaults": {"cpu": "500m", "memory": "512Mi", "ttlSeconds": 3600},
    "allowedImages": ["docker.io/library/python:*", "ghcr.io/acme/*"],
}


def tenant_body(spec: dict[str, Any] | None = None, *, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Tenant body as the API server would hand it over."""
    body: dict[str, Any] = {
        "apiVersion": "sandbox-operator.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": "team-a", "uid": UID, "generation": 2, "creationTimestamp": format_time(CREATED)},
        "spec": {**SPEC, **(spec or {})},
    }
    if status is not None:
        body["status"] = status
    return body


def tenant(spec: dict[str, Any] | None = None) -> TenantObject:
    """A validated Tenant with the given spec fields over SPEC."""
    loaded = load_tenant(tenant_body(spec))
    assert isinstance(loaded, TenantObject), loaded
    return loaded


def _child(manifest: dict[str, Any]) -> ChildSummary:
    return ChildSummary.from_body(manifest)


def computed_quota(t: TenantObject, used: dict[str, str] | None = None) -> QuotaSummary:
    """The tenant's quota as the resourcequota controller leaves it once computed."""
    manifest = render_resource_quota(t)
    hard = manifest["spec"]["hard"]
    return QuotaSummary.from_body(
        {**manifest, "status": {"hard": hard, "used": {key: "0" for key in hard} | (used or {})}}
    )


def provisioned(t: TenantObject, **overrides: Any) -> TenantObserved:
    """Everything in place and current, quota computed; keyword arguments replace single observations."""
    observed: dict[str, Any] = {
        "namespace": NamespaceSummary.from_body(render_namespace(t)),
        "quota": computed_quota(t),
        "limit_range": _child(render_limit_range(t)),
        "network_policy": _child(render_default_deny(t)),
        "policy_binding": _child(render_policy_binding(t)),
        "role_binding": _child(render_role_binding(t)),
        "exec_role_binding": _child(render_exec_role_binding(t)),
        "policy_enforced": True,
    }
    observed.update(overrides)
    return TenantObserved(**observed)
