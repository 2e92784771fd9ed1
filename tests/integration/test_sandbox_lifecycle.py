"""The Sandbox operator against a real API server: children, readiness, validation, expiry, suspend, deletion."""

from __future__ import annotations

import datetime as dt
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.handle import Cluster
from localcluster.operator_process import OperatorProcess

from sandbox_operator.api import names as c
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def sandbox(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name},
        "spec": {"image": "busybox", "command": ["sleep", "3600"], **spec},
    }


class Sandboxes:
    """Small helpers over the API for one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.networking = client.NetworkingV1Api(api)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.custom.create_namespaced_custom_object(c.GROUP, c.VERSION, self.namespace, c.PLURAL, body))

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(c.GROUP, c.VERSION, self.namespace, c.PLURAL, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(c.GROUP, c.VERSION, self.namespace, c.PLURAL, name, patch)

    def touch(self, name: str, moment: dt.datetime) -> None:
        """Bump the activity annotation, as a client using the sandbox would."""
        self.patch(name, {"metadata": {"annotations": {c.ANNOTATION_LAST_ACTIVITY: rfc3339(moment)}}})

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.get(name) or {}).get("status") or {})

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(c.GROUP, c.VERSION, self.namespace, c.PLURAL, name)

    def condition(self, name: str, kind: str = "Ready") -> dict[str, Any] | None:
        body = self.get(name) or {}
        return next((x for x in body.get("status", {}).get("conditions", []) if x["type"] == kind), None)

    def wait_condition(self, name: str, status: str, reason: str | None = None, kind: str = "Ready",
                       timeout: float = 60) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            cond = self.condition(name, kind)
            if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
                return cond
            return None

        return wait_for(matches, timeout=timeout, what=f"{name} {kind}={status} {reason or ''}")

    def pod(self, name: str) -> client.V1Pod | None:
        try:
            return self.core.read_namespaced_pod(f"sbx-{name}", self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def children(self, name: str) -> dict[str, list[str]]:
        selector = f"{c.LABEL_SANDBOX}={name}"
        return {
            "pods": [p.metadata.name for p in
                     self.core.list_namespaced_pod(self.namespace, label_selector=selector).items],
            "services": [s.metadata.name for s in
                         self.core.list_namespaced_service(self.namespace, label_selector=selector).items],
            "networkpolicies": [n.metadata.name for n in self.networking.list_namespaced_network_policy(
                self.namespace, label_selector=selector).items],
            "pvcs": [p.metadata.name for p in self.core.list_namespaced_persistent_volume_claim(
                self.namespace, label_selector=selector).items],
        }

    def events(self, name: str) -> list[str]:
        found = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={c.KIND}").items
        return [e.reason for e in found for _ in range(e.count or 1)]


@pytest.fixture
def sandboxes(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Sandboxes:
    """Sandboxes in a namespace where the API server enforces Pod Security `restricted` on every pod."""
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    return Sandboxes(api, namespace)


@pytest.fixture
def volume(api: client.ApiClient) -> Iterator[str]:
    """A PersistentVolume for a workspace claim to bind to (the local cluster has no dynamic provisioner)."""
    core = client.CoreV1Api(api)
    name = f"test-pv-{uuid.uuid4().hex[:8]}"
    core.create_persistent_volume(client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": "1Gi"}, access_modes=["ReadWriteOnce"], storage_class_name="manual",
            host_path=client.V1HostPathVolumeSource(path=f"/tmp/{name}"),
            persistent_volume_reclaim_policy="Retain",
        ),
    ))
    yield name
    core.delete_persistent_volume(name)


def test_apply_creates_pod_and_policy_owned_by_the_sandbox(sandboxes: Sandboxes) -> None:
    created = sandboxes.create(sandbox("owned"))
    wait_for(lambda: sandboxes.pod("owned"), what="the pod")
    pod = sandboxes.pod("owned")
    assert pod is not None
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (c.KIND, "owned", created["metadata"]["uid"], True)
    policy = sandboxes.networking.read_namespaced_network_policy("sbx-owned", sandboxes.namespace)
    assert policy.metadata.owner_references[0].uid == created["metadata"]["uid"]
    assert sorted(policy.spec.policy_types) == ["Egress", "Ingress"]
    security = pod.spec.containers[0].security_context
    assert security.run_as_non_root and security.read_only_root_filesystem
    assert security.capabilities.drop == ["ALL"] and security.allow_privilege_escalation is False
    assert pod.spec.automount_service_account_token is False


def test_kubectl_wait_for_ready_succeeds_when_the_pod_runs(cluster: Cluster, sandboxes: Sandboxes) -> None:
    sandboxes.create(sandbox("waited"))
    # Fully qualified: another project's CRD (agent-sandbox's, which bench/ installs) may also be called "sandboxes".
    result = cluster.kubectl("wait", "--for=condition=Ready", f"{c.PLURAL}.{c.GROUP}/waited", "-n",
                             sandboxes.namespace, "--timeout=60s", check=False)
    assert result.returncode == 0, result.stderr
    body = sandboxes.get("waited")
    assert body is not None
    assert body["status"]["phase"] == "Ready"
    assert body["status"]["podIP"] and body["status"]["podName"] == "sbx-waited"
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]


def test_the_normal_path_posts_no_events_by_default(sandboxes: Sandboxes) -> None:
    """Default settings: no Normal Events for the normal path (Created, Ready; each would be one more API write),
    and reconciles that change nothing post nothing. Failures keep theirs (the OOM test below)."""
    sandboxes.create(sandbox("eventful"))
    sandboxes.wait_condition("eventful", "True", "PodReady")
    # Activity bumps trigger reconciles that change nothing but lastActivityAt (a few seconds ahead is within the
    # clock skew allowed; far ahead would count as the moment it is seen).
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for second in range(3):
        sandboxes.touch("eventful", now + dt.timedelta(seconds=second))
    try:
        wait_for(lambda: sandboxes.status("eventful").get("lastActivityAt") == rfc3339(now + dt.timedelta(seconds=2)),
                 what="the activity annotation to reach status")
    except BaseException:
        print("DEBUG", sandboxes.get("eventful"))
        raise
    assert sandboxes.events("eventful") == []


def test_invalid_spec_is_refused_with_the_field_path_and_nothing_is_created(sandboxes: Sandboxes) -> None:
    bad = sandbox("invalid", resources={"memory": "lots"},
                  lifetime={"ttlSeconds": 60, "expiresAt": "2030-01-01T00:00:00Z"})
    with pytest.raises(ApiException) as refused:
        sandboxes.create(bad)
    assert refused.value.status == 422
    assert "spec.resources.memory" in refused.value.body
    assert "spec.lifetime" in refused.value.body
    assert sandboxes.get("invalid") is None
    assert sandboxes.children("invalid") == {"pods": [], "services": [], "networkpolicies": [], "pvcs": []}


def test_ttl_deletes_the_sandbox_and_its_children_at_the_deadline(
    sandboxes: Sandboxes, operator: OperatorProcess
) -> None:
    created = sandboxes.create(sandbox("short", lifetime={"ttlSeconds": 6}))
    sandboxes.wait_condition("short", "True", "PodReady")
    born = dt.datetime.fromisoformat(created["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    wait_for(lambda: sandboxes.get("short") is None, timeout=30, interval=0.1, what="TTL deletion")
    gone_after = (dt.datetime.now(dt.UTC) - born).total_seconds()
    assert 6 <= gone_after < 12, f"deleted {gone_after:.1f}s after creation, TTL 6s"
    wait_for(lambda: sandboxes.children("short") == {"pods": [], "services": [], "networkpolicies": [], "pvcs": []},
             what="the garbage collector to remove the children")
    assert operator.metrics().get('sandbox_operator_expirations_total{action="delete",reason="TTLExpired"}', 0) >= 1


def test_idle_timeout_follows_the_activity_annotation(sandboxes: Sandboxes) -> None:
    sandboxes.create(sandbox("idle", lifetime={"idleTimeoutSeconds": 8, "onExpiry": "Suspend"}))
    sandboxes.wait_condition("idle", "True", "PodReady")
    now = dt.datetime.now(dt.UTC)
    sandboxes.touch("idle", now)
    wait_for(lambda: sandboxes.status("idle").get("expiresAt") == rfc3339(now + dt.timedelta(seconds=8)),
             what="the deadline to move")
    sandboxes.wait_condition("idle", "True", "IdleTimeout", kind="Expired", timeout=30)
    wait_for(lambda: sandboxes.pod("idle") is None, what="the pod to be removed on suspend")
    assert sandboxes.get("idle") is not None, "onExpiry Suspend keeps the Sandbox"
    sandboxes.touch("idle", dt.datetime.now(dt.UTC))
    sandboxes.wait_condition("idle", "True", "PodReady", timeout=30)


def test_sandbox_that_expired_while_the_operator_was_down_is_cleaned_on_start(
    sandboxes: Sandboxes, operator: OperatorProcess
) -> None:
    sandboxes.create(sandbox("orphan", lifetime={"ttlSeconds": 5}))
    sandboxes.wait_condition("orphan", "True", "PodReady")
    operator.stop(signal.SIGKILL)
    try:
        deadline = dt.datetime.fromisoformat(sandboxes.status("orphan")["expiresAt"].replace("Z", "+00:00"))
        wait_for(lambda: dt.datetime.now(dt.UTC) > deadline + dt.timedelta(seconds=2),
                 timeout=30, what="the deadline to pass while the operator is down")
        assert sandboxes.get("orphan") is not None, "nothing else may delete it while the operator is down"
    finally:
        operator.start()
    wait_for(lambda: sandboxes.get("orphan") is None, timeout=30, what="the restarted operator to delete it")


def test_suspend_deletes_the_pod_and_keeps_the_workspace_claim(sandboxes: Sandboxes, volume: str) -> None:
    sandboxes.create(sandbox("sleepy", workspace={"size": "1Gi", "persistent": True, "storageClassName": "manual"}))
    sandboxes.wait_condition("sleepy", "True", "PodReady")
    claim = sandboxes.core.read_namespaced_persistent_volume_claim("sbx-sleepy-workspace", sandboxes.namespace)
    assert claim.spec.volume_name == volume

    sandboxes.patch("sleepy", {"spec": {"suspended": True}})
    sandboxes.wait_condition("sleepy", "True", "UserRequested", kind="Suspended")
    wait_for(lambda: sandboxes.pod("sleepy") is None, what="the pod to go")
    assert sandboxes.children("sleepy")["pvcs"] == ["sbx-sleepy-workspace"]

    sandboxes.patch("sleepy", {"spec": {"suspended": False}})
    sandboxes.wait_condition("sleepy", "True", "PodReady")
    pod = sandboxes.pod("sleepy")
    assert pod is not None
    claims = [v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim]
    assert claims == ["sbx-sleepy-workspace"]
    assert sandboxes.core.read_namespaced_persistent_volume_claim(
        "sbx-sleepy-workspace", sandboxes.namespace).metadata.uid == claim.metadata.uid
    assert {"Suspended", "Resumed"} <= set(sandboxes.events("sleepy"))


def test_a_vanished_pod_is_recreated(sandboxes: Sandboxes) -> None:
    sandboxes.create(sandbox("phoenix"))
    sandboxes.wait_condition("phoenix", "True", "PodReady")
    first = sandboxes.pod("phoenix")
    assert first is not None
    sandboxes.core.delete_namespaced_pod("sbx-phoenix", sandboxes.namespace, grace_period_seconds=0)
    wait_for(lambda: (p := sandboxes.pod("phoenix")) is not None and p.metadata.uid != first.metadata.uid,
             what="a new pod")
    sandboxes.wait_condition("phoenix", "True", "PodReady")


def test_deleting_the_sandbox_removes_every_child(sandboxes: Sandboxes) -> None:
    sandboxes.create(sandbox("doomed", network={"ports": [{"name": "http", "port": 8080}]}))
    sandboxes.wait_condition("doomed", "True", "PodReady")
    assert sandboxes.children("doomed") == {
        "pods": ["sbx-doomed"], "services": ["sbx-doomed"], "networkpolicies": ["sbx-doomed"], "pvcs": []}
    sandboxes.delete("doomed")
    wait_for(lambda: sandboxes.children("doomed") == {"pods": [], "services": [], "networkpolicies": [], "pvcs": []},
             what="the garbage collector to remove every child")


def test_the_operator_never_writes_spec(sandboxes: Sandboxes) -> None:
    sandboxes.create(sandbox("untouched", lifetime={"ttlSeconds": 3600}))
    sandboxes.wait_condition("untouched", "True", "PodReady")
    sandboxes.patch("untouched", {"spec": {"suspended": True}})
    sandboxes.wait_condition("untouched", "True", "UserRequested", kind="Suspended")
    body = sandboxes.get("untouched")
    assert body is not None
    assert body["metadata"]["generation"] == 2  # the create and our one patch: nobody else changed spec
    operator_entries = [e for e in body["metadata"]["managedFields"] if e["manager"] == "sandbox-operator"]
    assert operator_entries, "the operator identifies itself as field manager sandbox-operator"
    for entry in operator_entries:
        assert entry.get("subresource") == "status", entry


def test_an_oom_killed_pod_is_reported_and_not_recreated_in_a_loop(sandboxes: Sandboxes) -> None:
    sandboxes.create(sandbox("hog"))
    sandboxes.wait_condition("hog", "True", "PodReady")
    pod = sandboxes.pod("hog")
    assert pod is not None
    now = rfc3339(dt.datetime.now(dt.UTC))
    # On kwok nodes no kubelet runs, so the test plays the kubelet's part (tests/node does it for real).
    sandboxes.core.patch_namespaced_pod_status("sbx-hog", sandboxes.namespace, {"status": {
        "phase": "Failed",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
        "containerStatuses": [{
            "name": c.CONTAINER_NAME, "image": "busybox", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "startedAt": now, "finishedAt": now}},
        }],
    }})
    failed = sandboxes.wait_condition("hog", "False", "OOMKilled")
    assert "memory" in failed["message"].lower() or "oom" in failed["message"].lower()
    assert sandboxes.status("hog")["phase"] == "Failed"
    wait_for(lambda: "Failed" in sandboxes.events("hog"), what="a Warning event")
    posted = sandboxes.core.list_namespaced_event(
        sandboxes.namespace, field_selector="involvedObject.name=hog,reason=Failed").items
    assert [(e.source.component, e.reporting_component) for e in posted] == [("sandbox-operator", "sandbox-operator")]
    same = sandboxes.pod("hog")
    assert same is not None and same.metadata.uid == pod.metadata.uid, "a failed pod is kept, not replaced"
