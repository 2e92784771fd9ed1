"""Self-tests proving the cluster under test is a real Kubernetes: each fails if the feature were absent."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.handle import Cluster

from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

GROUP = "selftest.sandbox-operator.io"
WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object",
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                    "x-kubernetes-validations": [
                        {"rule": "self.min <= self.max", "message": "min must not exceed max"},
                    ],
                }},
            }},
        }],
    },
}


@pytest.fixture(scope="module")
def widgets(cluster: Cluster) -> str:
    """Install the Widget CRD once and wait until it is served."""
    extensions = client.ApiextensionsV1Api(cluster.api_client())
    try:
        extensions.create_custom_resource_definition(WIDGET_CRD)
    except ApiException as error:
        if error.status != 409:
            raise
    wait_for(lambda: any(
        c.type == "Established" and c.status == "True"
        for c in (extensions.read_custom_resource_definition(f"widgets.{GROUP}").status.conditions or [])
    ), what="Widget CRD established")
    return GROUP


def widget(name: str, low: int, high: int) -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"min": low, "max": high},
    }


def test_crd_cel_rule_rejects_bad_object_with_its_message(api: client.ApiClient, namespace: str, widgets: str) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, "v1", namespace, "widgets", widget("good", 1, 2))
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, "v1", namespace, "widgets", widget("bad", 3, 2))
    assert refused.value.status == 422
    assert "min must not exceed max" in refused.value.body


def test_resource_quota_count_rejects_the_object_beyond_the_limit(
    api: client.ApiClient, namespace: str, widgets: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(namespace, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="widgets"),
        spec=client.V1ResourceQuotaSpec(hard={f"count/widgets.{GROUP}": "2"}),
    ))
    # A quota without status constrains nothing yet: wait for the resourcequota controller.
    wait_for(lambda: (core.read_namespaced_resource_quota("widgets", namespace).status.hard or {}),
             what="quota status populated by the resourcequota controller")
    custom = client.CustomObjectsApi(api)

    def create_first() -> bool:
        try:
            custom.create_namespaced_custom_object(GROUP, "v1", namespace, "widgets", widget("w0", 0, 1))
        except ApiException as error:
            if "status unknown for quota" not in error.body:
                raise
            return False  # the apiserver's quota cache has not seen the status yet
        return True

    # The quota controller learns of a new CRD on its periodic discovery resync (30s).
    wait_for(create_first, timeout=150, what="the quota to be computed")
    custom.create_namespaced_custom_object(GROUP, "v1", namespace, "widgets", widget("w1", 0, 1))
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, "v1", namespace, "widgets", widget("w2", 0, 1))
    assert refused.value.status == 403
    assert "exceeded quota" in refused.value.body


def test_restricted_pod_security_rejects_a_privileged_pod(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="privileged"),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="c", image="busybox", security_context=client.V1SecurityContext(privileged=True))]),
    )
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace, pod)
    assert refused.value.status == 403
    assert "violates PodSecurity" in refused.value.body


def test_deleting_an_owner_garbage_collects_its_child(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="child",
        owner_references=[client.V1OwnerReference(
            api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)],
    )))
    core.delete_namespaced_config_map("owner", namespace)

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("child", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(child_gone, what="the garbage collector to delete the child")


def test_a_pod_is_scheduled_and_reaches_running(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="runner"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
    ))
    pod = wait_for(lambda: (p := core.read_namespaced_pod("runner", namespace)).status.phase == "Running" and p,
                   what="the pod to reach Running")
    assert pod.spec.node_name
    assert pod.status.pod_ip


def test_a_restricted_user_is_denied_what_rbac_does_not_grant(
    cluster: Cluster, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    user = f"reader-{uuid.uuid4().hex[:6]}"
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="configmap-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
    ))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="configmap-reader"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"),
        subjects=[client.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")],
    ))
    user_core = client.CoreV1Api(cluster.api_client(cluster.user_kubeconfig(tmp_path / "user.kubeconfig", user)))

    def can_list_configmaps() -> bool:
        try:
            user_core.list_namespaced_config_map(namespace)
        except ApiException as error:
            if error.status != 403:
                raise
            return False  # the authorizer's cache has not seen the new binding yet
        return True

    wait_for(can_list_configmaps, what="the RoleBinding to take effect")
    with pytest.raises(ApiException) as denied:
        user_core.list_namespaced_secret(namespace)
    assert denied.value.status == 403
    with pytest.raises(ApiException) as denied_elsewhere:
        user_core.list_namespaced_config_map("default")
    assert denied_elsewhere.value.status == 403
