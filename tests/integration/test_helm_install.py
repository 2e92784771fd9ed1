"""``helm install`` on a real API server: every object accepted, the chart's identity runs the operator,
``helm uninstall`` leaves only the CRDs.

On the local cluster's fake (kwok) nodes the chart's pods only look Running, so the operator itself runs here
as a process using the chart's ServiceAccount token: what is tested is what the chart installs and grants.
The CRDs (``crds.install``) and the tenant ClusterRole and policy (``tenants.enabled``) are left out: crds/ and
deploy/ are applied cluster-wide by other tests, and Helm refuses to adopt objects it did not create
(``test_helm_crds.py`` installs, upgrades and keeps the CRDs with the chart).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.handle import Cluster
from localcluster.helm import CHART, helm, set_args, uninstall
from localcluster.operator_process import OperatorProcess
from localcluster.paths import CRDS

from tests.integration.operators import PEERING_GROUP, cluster_peering, create_sandbox, exclusive, wait_ready
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster
__all__ = ["cluster_peering", "exclusive"]


def _token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    entry = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [entry],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": entry["name"], "user": account}}],
        "current-context": account,
    }))
    path.chmod(0o600)
    return path


def _exists(read: object) -> bool:
    try:
        read()  # type: ignore[operator]
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_helm_install_runs_with_the_chart_identity_and_uninstall_leaves_only_crds(
    cluster: Cluster, api: client.ApiClient, crds: None, namespace: str, exclusive: None, tmp_path: Path,
) -> None:
    release = f"sbx-{uuid.uuid4().hex[:6]}"
    peering = f"{release}-peering"
    values = {"crds.install": False, "tenants.enabled": False, "peering.name": peering, "peering.lifetimeSeconds": 15}
    installed = helm("install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "180s",
                     *set_args(values), kubeconfig=cluster.kubeconfig, check=False)
    assert installed.returncode == 0, installed.stderr
    fullname = f"{release}-sandbox-operator"
    custom, rbac = client.CustomObjectsApi(api), client.RbacAuthorizationV1Api(api)
    try:
        assert _exists(lambda: custom.get_cluster_custom_object(PEERING_GROUP, "v1", "clusterkopfpeerings", peering))
        # helm's --wait looks at the ReplicaSet's ready pods; the Deployment's own count follows in a later update.
        apps = client.AppsV1Api(api)
        wait_for(lambda: apps.read_namespaced_deployment(fullname, namespace).status.available_replicas == 2,
                 timeout=60, what="the Deployment to count 2 available replicas")

        # A second release with the same peering name is refused before anything is written, saying what to change.
        second = helm("install", f"{release}-b", str(CHART), "--namespace", namespace, *set_args(values),
                      kubeconfig=cluster.kubeconfig, check=False)
        assert second.returncode != 0
        assert f"ClusterKopfPeering {peering} belongs to release {namespace}/{release}" in second.stderr, second.stderr
        assert "needs its own peering.name" in second.stderr

        kubeconfig = _token_kubeconfig(cluster, namespace, fullname, tmp_path / "sa.kubeconfig")
        process = OperatorProcess(cluster, tmp_path / "operator.log", kubeconfig=kubeconfig, STANDALONE="false",
                                  PEERING_NAME=peering, PEERING_LIFETIME="15", PRIORITY="1000")
        process.start()
        try:
            create_sandbox(api, namespace, "from-the-chart")
            wait_ready(api, namespace, ["from-the-chart"])
        finally:
            process.stop()
    finally:
        uninstalled = uninstall(release, namespace, cluster.kubeconfig)
    assert uninstalled.returncode == 0, uninstalled.stderr

    selector = f"app.kubernetes.io/instance={release}"
    leftovers = cluster.kubectl("get", "all,serviceaccounts,networkpolicies,poddisruptionbudgets,configmaps",
                                "-n", namespace, "-l", selector, "-o", "name").stdout.split()
    assert leftovers == []
    assert not _exists(lambda: rbac.read_cluster_role(fullname))
    assert not _exists(lambda: rbac.read_cluster_role_binding(fullname))
    assert not _exists(lambda: custom.get_cluster_custom_object(PEERING_GROUP, "v1", "clusterkopfpeerings", peering))
    crd_names = {d["metadata"]["name"] for path in CRDS.glob("*.yaml")
                 for d in yaml.safe_load_all(path.read_text()) if d}
    extensions = client.ApiextensionsV1Api(api)
    assert all(_exists(lambda n=name: extensions.read_custom_resource_definition(n)) for name in crd_names)
    # The Sandbox outlives the release: its CRD stays, so nothing the users made is lost by an uninstall.
    assert _exists(lambda: custom.get_namespaced_custom_object("sandbox-operator.io", "v1alpha1", namespace,
                                                               "sandboxes", "from-the-chart"))
