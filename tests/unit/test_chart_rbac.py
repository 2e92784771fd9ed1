"""The chart's ClusterRole grants exactly what the operator's code calls: nothing missing, nothing extra."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest
from kopf._cogs.structs.references import Selector
from kopf._core.intents import registries
from localcluster.helm import find, template

from sandbox_operator.api import names as c
from sandbox_operator.k8s import client as kube
from sandbox_operator.tenant.render import render_exec_role_binding, render_role_binding
from tests import rbac
from tests.unit.tenant_builders import tenant


def _chart_rules(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return find(template(values), "ClusterRole", "sbx-sandbox-operator")["rules"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("namespaces", [[], ["team-a", "team-b"]])
def test_cluster_role_grants_exactly_what_the_code_calls(namespaces: list[str]) -> None:
    granted = rbac.granted_permissions(_chart_rules({"operator.watchNamespaces": namespaces}))
    needed = rbac.required_permissions(clusterwide=not namespaces)
    assert not needed - granted, f"the chart's ClusterRole misses: {sorted(needed - granted)}"
    assert not granted - needed, f"the chart's ClusterRole grants what no code uses: {sorted(granted - needed)}"


def test_bind_is_granted_only_on_the_tenant_roles() -> None:
    (rule,) = [r for r in _chart_rules() if "clusterroles" in r["resources"]]
    assert rule["verbs"] == ["bind"]
    assert rule["resourceNames"] == [c.TENANT_CLUSTER_ROLE, c.TENANT_EXEC_CLUSTER_ROLE]
    granted_by_the_operator = {render(tenant())["roleRef"]["name"]
                               for render in (render_role_binding, render_exec_role_binding)}
    assert set(rule["resourceNames"]) == granted_by_the_operator


def test_every_other_rule_applies_to_all_names() -> None:
    assert [r for r in _chart_rules() if r.get("resourceNames") and "clusterroles" not in r["resources"]] == []


def test_a_new_kind_the_operator_writes_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    class ChildKindWithSecrets(StrEnum):
        POD = "Pod"
        SECRET = "Secret"

    original = kube.Kube.create

    async def create(self: kube.Kube, kind: Any, manifest: Any) -> None:
        await original(self, kind, manifest)

    create.__annotations__["kind"] = ChildKindWithSecrets  # as if ChildKind grew a member
    monkeypatch.setattr(kube.Kube, "create", create)
    monkeypatch.setitem(kube.PATHS, "Secret", ("/api/v1", "secrets"))
    needed = rbac.required_permissions()
    assert ("", "secrets", "create") in needed  # Kube.create may now be asked to write Secrets
    assert needed - rbac.granted_permissions(_chart_rules())


def test_a_new_watched_resource_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registries.get_default_registry()
    (handler, *_) = registry._watching.get_all_handlers()
    extra = type(handler)(**{**vars(handler), "selector": Selector("configmaps"), "id": "watch-configmaps"})
    monkeypatch.setattr(registry._watching, "get_all_handlers", lambda: [handler, extra])
    needed = rbac.kopf_handler_permissions()
    assert {("", "configmaps", "list"), ("", "configmaps", "watch")} <= needed


def test_rest_paths_map_to_rbac_resources() -> None:
    assert rbac.resource_of_path("/api/v1/namespaces/ns/pods") == ("", "pods", False)
    assert rbac.resource_of_path("/api/v1/namespaces/ns") == ("", "namespaces", True)
    assert rbac.resource_of_path(f"/apis/{c.GROUP}/v1alpha1/namespaces/ns/sandboxes/x/status") == (
        c.GROUP, "sandboxes/status", True)
    assert rbac.resource_of_path("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings") == (
        "admissionregistration.k8s.io", "validatingadmissionpolicybindings", False)
