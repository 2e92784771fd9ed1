"""The chart's CRDs on a real API server: ``helm install`` on a cluster without them (including Kopf's peering CRDs,
whose ClusterKopfPeering the same release creates), ``helm upgrade`` with a changed CRD changes the served one, and
``helm uninstall`` keeps them (``crds.keep``, the default) with every Sandbox.

A fresh cluster is made by deleting crds/ from the local cluster (which deletes every Sandbox and Tenant on it) and
applying it again afterwards; on a cluster named by SANDBOX_OPERATOR_TEST_KUBECONFIG the test is skipped.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.handle import Cluster
from localcluster.helm import CHART, helm, set_args, uninstall
from localcluster.operator_process import install_crds
from localcluster.paths import CRDS

from sandbox_operator.api import names as c
from tests.integration.operators import CLUSTER_PEERINGS, PEERING_GROUP, PEERING_VERSION, exclusive

pytestmark = pytest.mark.cluster
__all__ = ["exclusive"]

SANDBOX_CRD = f"{c.PLURAL}.{c.GROUP}"
CRD_NAMES = sorted(doc["metadata"]["name"] for path in CRDS.glob("*.yaml")
                   for doc in yaml.safe_load_all(path.read_text()) if doc)


def _served_crds(extensions: client.ApiextensionsV1Api) -> list[str]:
    return sorted(crd.metadata.name for crd in extensions.list_custom_resource_definition().items
                  if crd.metadata.name in CRD_NAMES)


def _delete_crds(cluster: Cluster) -> None:
    """Delete crds/ (and so every object of them). A CRD deleted before the API server's watch cache for it is ready
    stays Terminating for minutes ("could not list instances: storage is (re)initializing": the CRD finalizer backs
    off exponentially), so wait until each one can be watched first."""
    api = cluster.api_client()
    for crd in client.ApiextensionsV1Api(api).list_custom_resource_definition().items:
        if crd.metadata.name in CRD_NAMES and not crd.metadata.deletion_timestamp:
            _wait_watchable(api, crd)
    cluster.kubectl("delete", "--ignore-not-found", "--wait", "--timeout=300s", "-f", str(CRDS), timeout=330)


def _wait_watchable(api: client.ApiClient, crd: Any, timeout: float = 60) -> None:
    """Until a watch of the CRD's objects is accepted: the API server serves watches from its cache only, and answers
    429 while that cache is (re)initializing."""
    version = next(v.name for v in crd.spec.versions if v.storage)
    path = f"/apis/{crd.spec.group}/{version}/{crd.spec.names.plural}"
    deadline = time.monotonic() + timeout
    request = api.param_serialize("GET", path, query_params=[("watch", "true"), ("timeoutSeconds", "1")],
                                  auth_settings=["BearerToken"])
    while True:
        response = api.call_api(*request, _request_timeout=10)
        status = response.status
        response.response.release_conn()
        if status == 200:
            return
        if status != 429 or time.monotonic() > deadline:
            raise AssertionError(f"watching {path} answered {status}")
        time.sleep(0.5)


@pytest.fixture
def fresh_cluster(cluster: Cluster, api: client.ApiClient, exclusive: None) -> Iterator[None]:
    """None of crds/ is served while the test runs (the session's operator is stopped); afterwards crds/ is
    applied again as the other tests expect it."""
    if cluster.external:
        pytest.skip("deletes the project's CRDs, and so every Sandbox and Tenant: on the local cluster only")
    _delete_crds(cluster)
    assert _served_crds(client.ApiextensionsV1Api(api)) == []
    try:
        yield
    finally:
        try:
            _delete_crds(cluster)  # the test's upgraded CRDs go; the repository's come back
        finally:
            install_crds(cluster)  # whatever happened: every later test needs them


def _chart_with_a_changed_sandbox_crd(directory: Path) -> Path:
    """A copy of the chart whose Sandbox CRD has a new optional field and a printer column showing it."""
    chart = directory / CHART.name
    shutil.copytree(CHART, chart)
    path = chart / "files" / "crds" / f"{c.GROUP}_{c.PLURAL}.yaml"
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["upgradeNote"] = {
        "type": "string", "description": "A field only the upgraded CRD has."}
    version["additionalPrinterColumns"].append({"name": "Note", "type": "string", "jsonPath": ".spec.upgradeNote"})
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def _sandbox_with_a_note(name: str) -> dict[str, Any]:
    return {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": name},
            "spec": {"image": "busybox:1.35.0", "command": ["sleep", "3600"], "upgradeNote": "after the upgrade"}}


def test_helm_installs_the_crds_on_a_fresh_cluster_upgrades_them_and_uninstall_keeps_them(
    cluster: Cluster, api: client.ApiClient, fresh_cluster: None, namespace: str, tmp_path: Path,
) -> None:
    extensions, custom = client.ApiextensionsV1Api(api), client.CustomObjectsApi(api)
    release = f"crds-{uuid.uuid4().hex[:6]}"
    peering = f"{release}-peering"
    values = {"tenants.enabled": False, "peering.name": peering, "replicaCount": 1}
    installed = helm("install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "180s",
                     *set_args(values), kubeconfig=cluster.kubeconfig, check=False)
    assert installed.returncode == 0, installed.stderr
    try:
        assert _served_crds(extensions) == CRD_NAMES
        sandbox_crd = extensions.read_custom_resource_definition(SANDBOX_CRD)
        assert sandbox_crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
        assert sandbox_crd.metadata.annotations["meta.helm.sh/release-name"] == release
        assert custom.get_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, CLUSTER_PEERINGS, peering)

        changed = _chart_with_a_changed_sandbox_crd(tmp_path)
        upgraded = helm("upgrade", release, str(changed), "--namespace", namespace, *set_args(values),
                        kubeconfig=cluster.kubeconfig, check=False)
        assert upgraded.returncode == 0, upgraded.stderr
        (version,) = extensions.read_custom_resource_definition(SANDBOX_CRD).spec.versions
        assert "Note" in [column.name for column in version.additional_printer_columns]
        assert "upgradeNote" in version.schema.open_apiv3_schema.properties["spec"].properties
        # The API server keeps the new field (it prunes fields its schema does not know) and prints its column.
        created = custom.create_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL,
                                                         _sandbox_with_a_note("noted"))
        assert created["spec"]["upgradeNote"] == "after the upgrade"
        printed = cluster.kubectl("get", f"{c.PLURAL}.{c.GROUP}", "noted", "-n", namespace).stdout
        assert "NOTE" in printed.splitlines()[0] and "after the upgrade" in printed, printed
    finally:
        uninstalled = uninstall(release, namespace, cluster.kubeconfig)
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert _served_crds(extensions) == CRD_NAMES
    with pytest.raises(ApiException) as gone:
        custom.get_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, CLUSTER_PEERINGS, peering)
    assert gone.value.status == 404
    # The Sandboxes outlive the release, and the CRD is still the upgraded one.
    kept = custom.get_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, "noted")
    assert kept["spec"]["upgradeNote"] == "after the upgrade"


def test_crds_applied_without_helm_are_refused_until_the_release_takes_them_over(
    cluster: Cluster, api: client.ApiClient, fresh_cluster: None, namespace: str,
) -> None:
    """As after ``kubectl apply -f crds/``, or chart 0.1.0, whose crds/ directory Helm applied without owning it."""
    install_crds(cluster)
    extensions = client.ApiextensionsV1Api(api)
    release = f"adopt-{uuid.uuid4().hex[:6]}"
    values = {"tenants.enabled": False, "peering.name": f"{release}-peering", "replicaCount": 1}
    refused = helm("install", release, str(CHART), "--namespace", namespace, *set_args(values),
                   kubeconfig=cluster.kubeconfig, check=False)
    assert refused.returncode != 0
    assert "invalid ownership metadata" in refused.stderr, refused.stderr
    assert 'CustomResourceDefinition "' in refused.stderr

    adopted = helm("upgrade", "--install", "--take-ownership", release, str(CHART), "--namespace", namespace,
                   "--wait", "--timeout", "180s", *set_args(values), kubeconfig=cluster.kubeconfig, check=False)
    assert adopted.returncode == 0, adopted.stderr
    try:
        annotations = extensions.read_custom_resource_definition(SANDBOX_CRD).metadata.annotations
        assert annotations["meta.helm.sh/release-name"] == release
        assert annotations["helm.sh/resource-policy"] == "keep"
    finally:
        uninstalled = uninstall(release, namespace, cluster.kubeconfig)
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert _served_crds(extensions) == CRD_NAMES
