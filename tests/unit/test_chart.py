"""The Helm chart: lints, renders objects valid for Kubernetes, refuses bad values, carries the CRDs verbatim."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from localcluster.chart_files import stale_copies
from localcluster.helm import CHART, KUBE_VERSION, find, helm, set_args, template

from sandbox_operator import metrics

EVERYTHING_ON = {
    "metrics.serviceMonitor.enabled": True,
    "metrics.prometheusRule.enabled": True,
    "metrics.grafanaDashboard.enabled": True,
    "operator.defaultTtlSeconds": 3600,
}
# Custom resources of other projects (Prometheus Operator) and Kopf: no schema in kubernetes_validate.
FOREIGN_KINDS = {"ServiceMonitor", "PrometheusRule", "ClusterKopfPeering", "KopfPeering"}


def test_chart_carries_the_crds_and_tenant_manifests_verbatim() -> None:
    assert stale_copies() == [], "run `python -m localcluster.chart_files` to copy crds/ and deploy/ into the chart"


@pytest.mark.parametrize("values", [{}, EVERYTHING_ON, {"operator.watchNamespaces": ["team-a", "team-b"]},
                                    {"crds.install": False}, {"crds.keep": False}])
def test_helm_lint_is_clean(values: dict[str, Any]) -> None:
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *set_args(values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", [{}, EVERYTHING_ON, {"operator.watchNamespaces": ["team-a"], "replicaCount": 1}])
def test_rendered_objects_are_valid_kubernetes_objects(values: dict[str, Any]) -> None:
    objects = template(values, "--include-crds")
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "NetworkPolicy",
            "PodDisruptionBudget", "CustomResourceDefinition", "ValidatingAdmissionPolicy"} <= kinds
    for obj in objects:
        if obj["kind"] in FOREIGN_KINDS:
            assert obj["apiVersion"] in ("monitoring.coreos.com/v1", "kopf.dev/v1"), obj["apiVersion"]
            continue
        kubernetes_validate.validate(obj, KUBE_VERSION.rsplit(".", 1)[0] + ".0", strict=True)


def test_optional_monitoring_objects_are_off_by_default_and_complete_when_on() -> None:
    assert not {o["kind"] for o in template()} & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    objects = template(EVERYTHING_ON)
    monitor = find(objects, "ServiceMonitor")
    service = find(objects, "Service", "-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    rules = find(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {"SandboxesStuckPending", "SandboxOperatorReconcileErrors"}


def _exported_metric_names() -> set[str]:
    names = set()
    for collector in metrics.REGISTRY.collect():
        names |= {sample.name for sample in collector.samples}
        names.add(collector.name)
    # Series of a labelled metric appear only once observed: add the suffixes Prometheus exposes.
    for family in list(names):
        names |= {f"{family}_total", f"{family}_bucket", f"{family}_count", f"{family}_sum"}
    return names


def test_alerts_and_dashboard_query_only_metrics_the_operator_exports() -> None:
    objects = template(EVERYTHING_ON)
    expressions = [r["expr"] for r in find(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]]
    dashboard = json.loads(find(objects, "ConfigMap", "-dashboard")["data"]["sandbox-operator.json"])
    expressions += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"\b(sandbox_operator_[a-z_]+)", expr)}
    assert used, "no operator metric is queried"
    assert used <= _exported_metric_names(), used - _exported_metric_names()


def test_deployment_is_hardened_and_probes_the_health_endpoint() -> None:
    deployment = find(template(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    health = next(p for p in container["ports"] if p["name"] == "health")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["SANDBOX_OPERATOR_HEALTH_PORT"] == str(health["containerPort"])
    assert env["SANDBOX_OPERATOR_STANDALONE"] == "false"
    # Replicas share one template: each derives its priority from its pod name, so none may set PRIORITY.
    assert env["SANDBOX_OPERATOR_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "SANDBOX_OPERATOR_PRIORITY" not in env
    assert env["SANDBOX_OPERATOR_PEERING_LIFETIME"] == "30"


def test_values_become_operator_settings() -> None:
    values = {"operator.watchNamespaces": ["team-a", "team-b"], "operator.defaultTtlSeconds": 600,
              "peering.lifetimeSeconds": 15, "operator.logFormat": "text"}
    objects = template(values)
    (container,) = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SANDBOX_OPERATOR_NAMESPACES"] == "team-a,team-b"
    assert env["SANDBOX_OPERATOR_DEFAULT_TTL_SECONDS"] == "600"
    assert env["SANDBOX_OPERATOR_PEERING_LIFETIME"] == "15"
    assert env["SANDBOX_OPERATOR_LOG_FORMAT"] == "text"
    peerings = [o for o in objects if o["kind"] == "KopfPeering"]
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert not [o for o in objects if o["kind"] == "ClusterKopfPeering"]


def test_the_chart_creates_the_peering_object_the_operator_joins() -> None:
    objects = template({"peering.name": "my-peering"})
    assert find(objects, "ClusterKopfPeering")["metadata"]["name"] == "my-peering"
    (container,) = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"name": "SANDBOX_OPERATOR_PEERING_NAME", "value": "my-peering"} in container["env"]


def test_tenant_policy_objects_are_the_deploy_manifests() -> None:
    objects = template()
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    for source in deploy.glob("*.yaml"):
        for expected in yaml.safe_load_all(source.read_text()):
            assert find(objects, expected["kind"], expected["metadata"]["name"]) == expected
    names = {o["metadata"]["name"] for o in template({"tenants.enabled": False})}
    assert not names & {"tenant-policy.sandbox-operator.io", "sandbox-operator-tenant", "sandbox-operator-tenant-exec"}


@pytest.mark.parametrize(("values", "complaint"), [
    ({"replicaCount": -1}, "replicaCount"),
    ({"image.pullPolicy": "Sometimes"}, "pullPolicy"),
    ({"peering.lifetimeSeconds": 1}, "lifetimeSeconds"),
    ({"operator.watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
    ({"operator.defaultTtlSeconds": 5}, "defaultTtlSeconds"),
    ({"operator.logLevel": "verbose"}, "logLevel"),
    ({"resources.limits.memory": None}, "memory"),  # null deletes the default: a memory limit is required
    ({"replicas": 3}, "replicas"),  # a typo of replicaCount: unknown keys are refused, not ignored
])
def test_bad_values_are_refused_by_the_values_schema(values: dict[str, Any], complaint: str) -> None:
    result = helm("template", "sbx", str(CHART), *set_args(values), check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr, result.stderr


def test_chart_version_follows_the_project() -> None:
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((CHART.parents[1] / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


def _operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_the_image_registry_can_be_set_for_the_chart_or_globally() -> None:
    assert _operator_container(template({"image.registry": "registry.example.com"}))["image"] == (
        "registry.example.com/localhost/sandbox-operator:0.1.0")
    both = {"image.registry": "registry.example.com", "global.imageRegistry": "mirror.internal/"}
    assert _operator_container(template(both))["image"] == "mirror.internal/localhost/sandbox-operator:0.1.0"


def test_common_labels_reach_every_object() -> None:
    objects = template({**EVERYTHING_ON, "commonLabels": {"team": "platform"}})
    unlabelled = [f"{o['kind']}/{o['metadata']['name']}" for o in objects
                  if (o["metadata"].get("labels") or {}).get("team") != "platform"]
    assert unlabelled == []


def test_security_contexts_come_from_values_and_openshift_can_leave_the_uid_unset() -> None:
    default = find(template({}), "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert default["runAsUser"] == 65532 and default["runAsNonRoot"] is True
    openshift = template({"podSecurityContext.runAsUser": None, "podSecurityContext.runAsGroup": None})
    context = find(openshift, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert "runAsUser" not in context and "runAsGroup" not in context and context["runAsNonRoot"] is True
    assert _operator_container(openshift)["securityContext"]["readOnlyRootFilesystem"] is True


def test_helm_test_creates_a_sandbox_with_its_own_account_and_labels_no_selector_takes() -> None:
    objects = template({})
    pod = next(o for o in objects if o["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    selector = find(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod["metadata"]["labels"].items()
    role = next(o for o in objects if o["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": ["sandbox-operator.io"], "resources": ["sandboxes"],
                              "verbs": ["create", "get", "delete"]}]


def test_notes_need_no_file_from_the_repository() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()  # rendering NOTES needs a cluster (helm install)
    assert "examples/" not in notes and "kind: Sandbox" in notes and "helm test {{ .Release.Name }}" in notes


def test_the_operator_guard_binds_the_charts_service_account_and_can_be_switched_off() -> None:
    policy = find(template({}), "ValidatingAdmissionPolicy", "-operator-guard")
    [condition] = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:sandbox-system:sbx-sandbox-operator'")
    assert not [o for o in template({"operatorGuard.enabled": False}) if o["metadata"]["name"].endswith("-guard")]
