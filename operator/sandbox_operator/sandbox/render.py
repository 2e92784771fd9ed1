"""Pure functions from a Sandbox to the manifests of its children (Pod, NetworkPolicy, Service, PVC) as plain dicts."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import EgressRule, OperatorDefaults, PodRecipe, SandboxObject, Workspace
from sandbox_operator.k8s.manifest import (
    HASH_ANNOTATION_LENGTH,
    bounded_name,
    child_metadata,
    controller_name,
    owner_reference,
    with_spec_hash,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Short grace: the sandbox holds no state outside its workspace, and suspension should free resources quickly.
TERMINATION_GRACE_SECONDS = 10
# How often the kubelet checks a declared readiness port: a sandbox is usually waited for by a program.
READINESS_PERIOD_SECONDS = 2


def child_name(sandbox_name: str, suffix: str = "") -> str:
    """`sbx-<name><suffix>`; names too long for a DNS label are cut and end in a hash so they stay unique."""
    return bounded_name(f"{c.CHILD_PREFIX}{sandbox_name}", suffix)


def pod_name(sandbox: SandboxObject) -> str:
    """Name of the sandbox's pod; deterministic so a restarted operator finds it instead of creating another."""
    return child_name(sandbox.name)


def service_name(sandbox: SandboxObject) -> str:
    """Name of the Service exposing the sandbox's ports."""
    return child_name(sandbox.name)


def network_policy_name(sandbox: SandboxObject) -> str:
    """Name of the sandbox's NetworkPolicy."""
    return child_name(sandbox.name)


def pvc_name(sandbox: SandboxObject) -> str:
    """Name of the PersistentVolumeClaim of a persistent workspace."""
    return child_name(sandbox.name, c.WORKSPACE_PVC_SUFFIX)


def selector_labels(sandbox: SandboxObject) -> dict[str, str]:
    """Labels that select exactly this sandbox's pod."""
    return {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_SANDBOX: sandbox.name}


def child_labels(sandbox: SandboxObject) -> dict[str, str]:
    """Labels on every child. The Sandbox's own labels are deliberately not copied: a user-chosen label could match
    some other NetworkPolicy's selector and open traffic this sandbox's policy denies."""
    return {c.LABEL_NAME: c.NAME, **selector_labels(sandbox)}


def owning_sandbox(child: Mapping[str, Any]) -> str | None:
    """The name of the Sandbox whose child this object is: the Sandbox its controller owner reference names, else the
    value of its sandbox label when it carries the operator's labels; None when it is no sandbox's child. Either way
    the object's name must be the one rendered for that Sandbox, so no other object is ever taken for a child; a pod
    claimed from a pool keeps its name, and is found by its controller owner reference alone (whatever its labels
    say now: a claimed pod whose labels were changed is still found, and replaced)."""
    meta = child.get("metadata") or {}
    owner = controller_name(child, c.KIND)
    labels = meta.get("labels") or {}
    if owner is not None and "containers" in (child.get("spec") or {}):  # a pod (listed items carry no kind)
        return owner
    if owner is None and labels.get(c.LABEL_MANAGED_BY) == c.MANAGED_BY:
        owner = labels.get(c.LABEL_SANDBOX) or None
    if owner is None or meta.get("name") not in (child_name(owner), child_name(owner, c.WORKSPACE_PVC_SUFFIX)):
        return None
    return owner


@dataclass(frozen=True)
class Claimed:
    """A warm pod a Sandbox took over from a pool: it keeps its name and the pool label (the pool's fence)."""

    pod_name: str
    pool: str


def _metadata(sandbox: SandboxObject, name: str) -> dict[str, Any]:
    return child_metadata(
        name, sandbox.namespace, child_labels(sandbox), owner_reference(c.KIND, sandbox.name, sandbox.uid)
    )


def _quantities(values: Mapping[str, int | str]) -> dict[str, str]:
    return {name: str(value) for name, value in values.items()}


def _container(spec: PodRecipe) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": c.CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": str(spec.image_pull_policy),
        "resources": {
            "limits": _quantities(spec.resources.limits()),
            "requests": _quantities(spec.resources.effective_requests()),
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": c.SANDBOX_UID,
            "runAsGroup": c.SANDBOX_GID,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": c.TMP_VOLUME, "mountPath": c.TMP_MOUNT_PATH},
            {"name": c.WORKSPACE_VOLUME, "mountPath": spec.workspace.mount_path},
        ],
        "workingDir": spec.workspace.mount_path,
        # The message file is written by untrusted code; reading only the file (never logs) keeps it short and it is
        # never copied into status anyway.
        "terminationMessagePolicy": "File",
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    if spec.env:
        # Passed through as given: a valueFrom stays a reference, the operator never reads a Secret.
        container["env"] = [var.model_dump(mode="json", by_alias=True, exclude_none=True) for var in spec.env]
    readiness_port = spec.network.readiness_port_number()
    if readiness_port is not None:
        container["readinessProbe"] = {
            "tcpSocket": {"port": readiness_port},
            "periodSeconds": READINESS_PERIOD_SECONDS,
            "timeoutSeconds": 1,
        }
    if spec.network.ports:
        container["ports"] = [
            {"name": port.name, "containerPort": port.port, "protocol": str(port.protocol)}
            for port in spec.network.ports
        ]
    return container


def _workspace_volume(workspace: Workspace, claim: str | None) -> dict[str, Any]:
    if claim is not None:
        return {"name": c.WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": claim}}
    return {"name": c.WORKSPACE_VOLUME, "emptyDir": {"sizeLimit": str(workspace.size)}}


def render_pod_spec(recipe: PodRecipe, defaults: OperatorDefaults, claim: str | None = None) -> dict[str, Any]:
    """The spec of a locked-down sandbox pod (Pod Security `restricted`, read-only root, no token, no host access),
    from the recipe alone: a warm pod of a pool and the pod of a Sandbox of the same recipe have the same spec.
    ``claim`` names the PersistentVolumeClaim of a persistent workspace.

    restartPolicy is Never: a sandbox is one session, so a restart would silently lose its processes and memory, and
    untrusted code that crashes should not loop; a finished container is reported as Failed instead.
    """
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "shareProcessNamespace": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": c.SANDBOX_UID,
            "runAsGroup": c.SANDBOX_GID,
            "fsGroup": c.SANDBOX_GID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(recipe)],
        "volumes": [
            {"name": c.TMP_VOLUME, "emptyDir": {"sizeLimit": c.TMP_SIZE_LIMIT}},
            _workspace_volume(recipe.workspace, claim),
        ],
    }
    if recipe.runtime_class_name:
        spec["runtimeClassName"] = recipe.runtime_class_name
    if defaults.node_selector:
        spec["nodeSelector"] = dict(defaults.node_selector)
    if defaults.tolerations:
        spec["tolerations"] = [dict(toleration) for toleration in defaults.tolerations]
    return spec


def recipe_hash(pod_spec: Mapping[str, Any]) -> str:
    """Hash of a rendered pod spec: a warm pod serves a Sandbox only when the two hashes are equal."""
    canonical = json.dumps(pod_spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_ANNOTATION_LENGTH]


def render_pod(sandbox: SandboxObject, claimed: Claimed | None = None) -> dict[str, Any]:
    """The sandbox's pod: its own (``sbx-<name>``), or the warm pod it claimed, relabelled and owned by it."""
    claim = pvc_name(sandbox) if sandbox.spec.workspace.persistent else None
    spec = render_pod_spec(sandbox.spec, sandbox.defaults, claim)
    pod = with_spec_hash({"apiVersion": "v1", "kind": "Pod", "metadata": _metadata(sandbox, pod_name(sandbox)),
                          "spec": spec})
    return pod if claimed is None else as_claimed(pod, claimed)


def as_claimed(pod: Mapping[str, Any], claimed: Claimed) -> dict[str, Any]:
    """A Sandbox's own pod manifest as the warm pod it claimed: that pod's name, and the pool label beside its own."""
    meta = pod["metadata"]
    metadata = {**meta, "name": claimed.pod_name, "labels": {**meta["labels"], c.LABEL_POOL: claimed.pool},
                "annotations": dict(meta.get("annotations") or {})}
    return with_spec_hash({**pod, "metadata": metadata})


def _networks(cidrs: Iterable[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(cidr) for cidr in cidrs]


def ip_block(network: IPNetwork, forbidden: Iterable[IPNetwork]) -> dict[str, Any] | None:
    """An ipBlock peer for `network` with every forbidden range inside it excepted; None if it lies inside one."""
    exceptions = []
    for excluded in forbidden:
        if excluded.version != network.version:
            continue
        if network.subnet_of(excluded):  # type: ignore[arg-type]
            return None
        if excluded.subnet_of(network):  # type: ignore[arg-type]
            exceptions.append(str(excluded))
    block: dict[str, Any] = {"cidr": str(network)}
    if exceptions:
        block["except"] = sorted(exceptions)
    return {"ipBlock": block}


# Never reachable through an allow-list entry, whatever CIDR it names.
_ALWAYS_FORBIDDEN = _networks((c.LINK_LOCAL_V4, c.LINK_LOCAL_V6, c.AWS_METADATA_V6))


def _forbidden(sandbox: SandboxObject) -> list[IPNetwork]:
    """Link-local and metadata ranges, plus what the platform forbids (e.g. the API server's addresses)."""
    return [*_ALWAYS_FORBIDDEN, *_networks(sandbox.defaults.forbidden_egress)]


def _allow_rule(rule: EgressRule, forbidden: list[IPNetwork]) -> dict[str, Any] | None:
    peer = ip_block(ipaddress.ip_network(rule.cidr), forbidden)
    if peer is None:
        # Validation refuses such entries; skipping here keeps the policy safe even if it were bypassed.
        return None
    egress: dict[str, Any] = {"to": [peer]}
    if rule.ports:
        egress["ports"] = [{"port": port.port, "protocol": str(port.protocol)} for port in rule.ports]
    return egress


def _internet_rule(forbidden: list[IPNetwork]) -> dict[str, Any]:
    peers = [
        ip_block(ipaddress.ip_network("0.0.0.0/0"), [*_networks(c.NON_PUBLIC_V4), *forbidden]),
        ip_block(ipaddress.ip_network("::/0"), [*_networks((*c.NON_PUBLIC_V6, c.AWS_METADATA_V6)), *forbidden]),
    ]
    return {"to": [peer for peer in peers if peer is not None]}


def _dns_rule() -> dict[str, Any]:
    return {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": c.DNS_NAMESPACE}},
                "podSelector": {"matchLabels": dict(c.DNS_POD_LABELS)},
            }
        ],
        "ports": [{"port": c.DNS_PORT, "protocol": "UDP"}, {"port": c.DNS_PORT, "protocol": "TCP"}],
    }


def egress_rules(sandbox: SandboxObject) -> list[dict[str, Any]]:
    """Egress rules of the sandbox's NetworkPolicy; an empty list denies all egress."""
    network = sandbox.spec.network
    rules = [_dns_rule()] if network.allow_dns else []
    forbidden = _forbidden(sandbox)
    if network.egress.mode is c.EgressMode.INTERNET:
        rules.append(_internet_rule(forbidden))
    elif network.egress.mode is c.EgressMode.ALLOW_LIST:
        rules.extend(rule for rule in (_allow_rule(r, forbidden) for r in network.egress.allow) if rule is not None)
    return rules


def ingress_rules(sandbox: SandboxObject) -> list[dict[str, Any]]:
    """Ingress rules: pods anywhere in the cluster may reach the exposed ports, nothing else gets in."""
    ports = sandbox.spec.network.ports
    if not ports:
        return []
    return [
        {
            "from": [{"namespaceSelector": {}}],
            "ports": [{"port": port.port, "protocol": str(port.protocol)} for port in ports],
        }
    ]


def render_network_policy(sandbox: SandboxObject) -> dict[str, Any]:
    """Default-deny NetworkPolicy of the sandbox pod, opened only as far as `spec.network` asks."""
    return with_spec_hash(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata(sandbox, network_policy_name(sandbox)),
            "spec": {
                "podSelector": {"matchLabels": selector_labels(sandbox)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress_rules(sandbox),
                "egress": egress_rules(sandbox),
            },
        }
    )


def render_service(sandbox: SandboxObject) -> dict[str, Any] | None:
    """ClusterIP Service on the exposed ports, or None when the sandbox exposes none."""
    ports = sandbox.spec.network.ports
    if not ports:
        return None
    return with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(sandbox, service_name(sandbox)),
            "spec": {
                "type": "ClusterIP",
                "selector": selector_labels(sandbox),
                "ports": [
                    {"name": port.name, "port": port.port, "targetPort": port.port, "protocol": str(port.protocol)}
                    for port in ports
                ],
            },
        }
    )


def render_pvc(sandbox: SandboxObject) -> dict[str, Any] | None:
    """PersistentVolumeClaim of a persistent workspace, or None when the workspace is an emptyDir."""
    workspace = sandbox.spec.workspace
    if not workspace.persistent:
        return None
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": str(workspace.size)}},
    }
    if workspace.storage_class_name:
        spec["storageClassName"] = workspace.storage_class_name
    return with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _metadata(sandbox, pvc_name(sandbox)),
            "spec": spec,
        }
    )


@dataclass(frozen=True)
class Rendering:
    """Every child of a Sandbox as rendered for it (its own pod; a claimed pod is ``as_claimed`` of it): what a pass
    compares the live children with and creates. Nobody changes one: a pass may reuse it (sandbox.handlers)."""

    pod: dict[str, Any]
    network_policy: dict[str, Any]
    service: dict[str, Any] | None
    pvc: dict[str, Any] | None


def render_children(sandbox: SandboxObject) -> Rendering:
    """The Sandbox's children, rendered."""
    return Rendering(pod=render_pod(sandbox), network_policy=render_network_policy(sandbox),
                     service=render_service(sandbox), pvc=render_pvc(sandbox))
