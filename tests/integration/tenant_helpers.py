"""Helpers for the Tenant tests: create a Tenant and wait until it is usable, and small Sandbox calls."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.handle import Cluster

from sandbox_operator.api import names as c
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
# The resourcequota controller may first have to discover the Sandbox CRD (a resync) before it counts Sandboxes.
READY_TIMEOUT = 150


def install_tenant_policy(cluster: Cluster) -> None:
    """Apply deploy/ (the tenant ClusterRole and admission policy), as a platform admin installs them."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "deploy"))


def sandbox_body(name: str, **spec: Any) -> dict[str, Any]:
    """A Sandbox that fits the test tenants unless the test says otherwise."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name},
        "spec": {
            "image": "busybox",
            "command": ["sleep", "3600"],
            "lifetime": {"ttlSeconds": 3600},
            "resources": {"cpu": "100m", "memory": "64Mi", "ephemeralStorage": "100Mi"},
            "workspace": {"size": "100Mi"},
            **spec,
        },
    }


class TenantHandle:
    """One Tenant under test and admin access to its namespace."""

    def __init__(self, api: client.ApiClient, name: str, namespace: str) -> None:
        self.api, self.name, self.namespace = api, name, namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def body(self) -> dict[str, Any]:
        return dict(self.custom.get_cluster_custom_object(c.GROUP, c.VERSION, c.TENANT_PLURAL, self.name))

    def status(self) -> dict[str, Any]:
        return dict(self.body().get("status") or {})

    def ready(self) -> dict[str, Any] | None:
        """The Ready condition when it is True."""
        conditions = self.status().get("conditions") or []
        return next((cond for cond in conditions if cond["type"] == "Ready" and cond["status"] == "True"), None)

    def patch(self, spec: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object(c.GROUP, c.VERSION, c.TENANT_PLURAL, self.name, {"spec": spec})

    def quota(self) -> client.V1ResourceQuota:
        return self.core.read_namespaced_resource_quota(c.TENANT_QUOTA_NAME, self.namespace)

    def create_sandbox(self, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        kwargs = {"dry_run": "All"} if dry_run else {}
        return dict(self.custom.create_namespaced_custom_object(
            c.GROUP, c.VERSION, self.namespace, c.PLURAL, body, **kwargs))

    def get_sandbox(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(c.GROUP, c.VERSION, self.namespace, c.PLURAL, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def delete_sandbox(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(c.GROUP, c.VERSION, self.namespace, c.PLURAL, name)

    def sandbox_names(self) -> list[str]:
        found = self.custom.list_namespaced_custom_object(c.GROUP, c.VERSION, self.namespace, c.PLURAL)
        return sorted(item["metadata"]["name"] for item in found["items"])

    def ready_condition(self, name: str) -> dict[str, Any] | None:
        body = self.get_sandbox(name) or {}
        return next((x for x in (body.get("status") or {}).get("conditions", []) if x["type"] == "Ready"), None)

    def wait_sandbox(self, name: str, status: str, reason: str | None = None, timeout: float = 60) -> dict[str, Any]:
        seen: list[dict[str, Any] | None] = [None]

        def matches() -> dict[str, Any] | None:
            cond = seen[0] = self.ready_condition(name)
            ok = cond is not None and cond["status"] == status and (reason is None or cond["reason"] == reason)
            return cond if ok else None

        try:
            return wait_for(matches, timeout=timeout, what=f"sandbox {name} Ready={status} {reason or ''}")
        except pytest.fail.Exception:
            pytest.fail(f"sandbox {name} did not reach Ready={status} {reason or ''} in {timeout}s: last {seen[0]}")

    def delete(self) -> None:
        try:
            self.custom.delete_cluster_custom_object(c.GROUP, c.VERSION, c.TENANT_PLURAL, self.name)
        except ApiException as error:
            if error.status != 404:
                raise


def tenant_spec(namespace: str, **overrides: Any) -> dict[str, Any]:
    """A tenant allowing busybox with room for a few small sandboxes; keyword arguments replace whole sections."""
    return {
        "namespace": namespace,
        "quota": {"maxSandboxes": 5, "cpu": "4", "memory": "4Gi", "ephemeralStorage": "10Gi"},
        "allowedImages": ["busybox", "docker.io/library/python:*"],
        **overrides,
    }


@contextmanager
def tenant(
    api: client.ApiClient, wait: bool = True, name: str | None = None, **overrides: Any
) -> Iterator[TenantHandle]:
    """A Tenant with a fresh name (or ``name``) and namespace ``<name>-ns``, Ready unless ``wait`` is false; deleted
    (with its namespace) after."""
    name = name or f"t-{uuid.uuid4().hex[:8]}"
    handle = TenantHandle(api, name, f"{name}-ns")
    body = {"apiVersion": c.API_VERSION, "kind": c.TENANT_KIND, "metadata": {"name": name},
            "spec": tenant_spec(handle.namespace, **overrides)}
    handle.custom.create_cluster_custom_object(c.GROUP, c.VERSION, c.TENANT_PLURAL, body)
    try:
        if wait:
            wait_for(handle.ready, timeout=READY_TIMEOUT, what=f"tenant {name} Ready")
        yield handle
    finally:
        handle.delete()


def api_error(call: Any) -> ApiException:
    """Run ``call`` and return the ApiException it raised; fail if it succeeded."""
    try:
        call()
    except ApiException as error:
        return error
    raise AssertionError("the API server accepted a request it should have refused")
