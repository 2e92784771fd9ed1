"""Rendered children: locked-down pod, default-deny policy, Service and PVC only when wanted, valid Kubernetes."""

from __future__ import annotations

import ipaddress
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import InvalidSandbox, OperatorDefaults, SandboxObject, load_sandbox
from sandbox_operator.sandbox.render import (
    child_name,
    ip_block,
    render_network_policy,
    render_pod,
    render_pvc,
    render_service,
)
from tests.unit import strategies
from tests.unit.builders import body, sandbox
from tests.unit.pss import restricted_violations

LINK_LOCAL = (ipaddress.ip_network(c.LINK_LOCAL_V4), ipaddress.ip_network(c.LINK_LOCAL_V6))
FULL = {
    "command": ["python", "-m", "http.server"],
    "env": [
        {"name": "MODE", "value": "dev"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api", "optional": False}}},
    ],
    "network": {
        "allowDNS": True,
        "egress": {"mode": "AllowList", "allow": [{"cidr": "0.0.0.0/0", "ports": [{"port": 443}]}]},
        "ports": [{"name": "http", "port": 8000}],
    },
    "workspace": {"persistent": True, "size": "5Gi", "storageClassName": "fast"},
    "runtimeClassName": "gvisor",
}


def container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def reachable_link_local(policy: dict[str, Any]) -> list[str]:
    """ipBlock peers through which some link-local address is reachable; a rule without peers reaches everything."""
    leaks = []
    for rule in policy["spec"]["egress"]:
        if not rule.get("to"):
            leaks.append("egress rule without peers")
        for peer in rule.get("to", []):
            block = peer.get("ipBlock")
            if block is None:
                continue
            network = ipaddress.ip_network(block["cidr"])
            excepted = [ipaddress.ip_network(cidr) for cidr in block.get("except", [])]
            for link_local in LINK_LOCAL:
                if network.version != link_local.version or not network.overlaps(link_local):
                    continue
                if not any(link_local.subnet_of(e) for e in excepted):  # type: ignore[arg-type]
                    leaks.append(block["cidr"])
    return leaks


def test_pod_is_locked_down() -> None:
    pod = render_pod(sandbox(FULL))
    spec, sc = pod["spec"], container(pod)["securityContext"]
    assert restricted_violations(pod) == []
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsUser"] == spec["securityContext"]["fsGroup"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert spec["runtimeClassName"] == "gvisor"


def test_pod_has_deterministic_name_labels_and_controller_owner() -> None:
    pod = render_pod(sandbox(FULL))
    assert pod["metadata"]["name"] == "sbx-demo"
    assert pod["metadata"]["labels"][c.LABEL_SANDBOX] == "demo"
    (owner,) = pod["metadata"]["ownerReferences"]
    assert owner["kind"] == "Sandbox"
    assert owner["uid"] == "0f0e0d0c-0000-4000-8000-000000000001"
    assert owner["controller"] is owner["blockOwnerDeletion"] is True


def test_sandbox_labels_are_not_copied_to_children() -> None:
    pod = render_pod(sandbox(labels={"role": "trusted-egress"}))
    assert "role" not in pod["metadata"]["labels"]


def test_secret_env_stays_a_reference() -> None:
    env = container(render_pod(sandbox(FULL)))["env"]
    assert env[1] == {
        "name": "API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api", "optional": False}},
    }


def test_requests_equal_limits_unless_given() -> None:
    resources = container(render_pod(sandbox({"resources": {"cpu": 2, "requests": {"memory": "128Mi"}}})))["resources"]
    assert resources["limits"] == {"cpu": "2", "memory": "512Mi", "ephemeral-storage": "2Gi"}
    assert resources["requests"] == {"cpu": "2", "memory": "128Mi", "ephemeral-storage": "2Gi"}


def test_workspace_is_a_size_limited_empty_dir_unless_persistent() -> None:
    volumes = {v["name"]: v for v in render_pod(sandbox({"workspace": {"size": "3Gi"}}))["spec"]["volumes"]}
    assert volumes["workspace"] == {"name": "workspace", "emptyDir": {"sizeLimit": "3Gi"}}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": c.TMP_SIZE_LIMIT}}
    assert render_pvc(sandbox()) is None


def test_persistent_workspace_mounts_its_claim() -> None:
    sbx = sandbox(FULL)
    pvc = render_pvc(sbx)
    assert pvc is not None
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    volumes = {v["name"]: v for v in render_pod(sbx)["spec"]["volumes"]}
    assert volumes["workspace"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_service_only_when_ports_are_exposed() -> None:
    assert render_service(sandbox()) is None
    service = render_service(sandbox(FULL))
    assert service is not None
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": 8000, "protocol": "TCP"}]
    assert service["spec"]["selector"][c.LABEL_SANDBOX] == "demo"


def test_policy_denies_everything_by_default() -> None:
    policy = render_network_policy(sandbox())
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == []
    assert policy["spec"]["egress"] == [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        }
    ], "DNS is allowed by the operator default"
    assert render_network_policy(sandbox({"network": {"allowDNS": False}}))["spec"]["egress"] == []


def test_allow_list_carves_out_link_local() -> None:
    (rule,) = render_network_policy(sandbox({**FULL, "network": {**FULL["network"], "allowDNS": False}}))["spec"][
        "egress"
    ]
    assert rule == {
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}],
        "ports": [{"port": 443, "protocol": "TCP"}],
    }


def test_internet_mode_reaches_public_addresses_only() -> None:
    policy = render_network_policy(sandbox({"network": {"allowDNS": False, "egress": {"mode": "Internet"}}}))
    (rule,) = policy["spec"]["egress"]
    v4, v6 = (peer["ipBlock"] for peer in rule["to"])
    assert v4["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"} <= set(v4["except"])
    assert v6["cidr"] == "::/0"
    assert {"fe80::/10", "fc00::/7"} <= set(v6["except"])
    assert reachable_link_local(policy) == []


def test_ip_block_inside_a_forbidden_range_is_dropped() -> None:
    forbidden = [ipaddress.ip_network("169.254.0.0/16")]
    assert ip_block(ipaddress.ip_network("169.254.169.254/32"), forbidden) is None
    assert ip_block(ipaddress.ip_network("10.0.0.0/8"), forbidden) == {"ipBlock": {"cidr": "10.0.0.0/8"}}


def test_ingress_only_on_exposed_ports_from_cluster_pods() -> None:
    (rule,) = render_network_policy(sandbox(FULL))["spec"]["ingress"]
    assert rule == {"from": [{"namespaceSelector": {}}], "ports": [{"port": 8000, "protocol": "TCP"}]}


def test_long_names_are_cut_to_63_chars_with_a_hash() -> None:
    long = "a" * 63
    assert len(child_name(long)) == 63
    assert len(child_name(long, c.WORKSPACE_PVC_SUFFIX)) == 63
    assert child_name(long).endswith(child_name(long)[-9:])
    assert child_name(long) != child_name("a" * 62 + "b")
    assert child_name("short") == "sbx-short"


@pytest.mark.parametrize("manifest", ["pod", "policy", "service", "pvc"])
def test_full_manifests_validate_against_kubernetes_schemas(manifest: str) -> None:
    sbx = sandbox(FULL)
    rendered = {"pod": render_pod, "policy": render_network_policy, "service": render_service, "pvc": render_pvc}
    kubernetes_validate.validate(rendered[manifest](sbx), "1.34", strict=True)


def test_rendering_is_deterministic() -> None:
    assert render_pod(sandbox(FULL)) == render_pod(sandbox(FULL))
    changed = render_pod(sandbox({**FULL, "image": "python:3.13"}))
    assert (
        changed["metadata"]["annotations"][c.ANNOTATION_SPEC_HASH]
        != render_pod(sandbox(FULL))["metadata"]["annotations"][c.ANNOTATION_SPEC_HASH]
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.specs())
def test_every_valid_spec_renders_a_restricted_pod_and_a_policy_without_link_local(spec: dict[str, Any]) -> None:
    sbx = SandboxObject.from_body(body(spec))
    assert restricted_violations(render_pod(sbx)) == []
    assert reachable_link_local(render_network_policy(sbx)) == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.specs())
def test_every_valid_spec_renders_schema_valid_manifests(spec: dict[str, Any]) -> None:
    sbx = SandboxObject.from_body(body(spec))
    for manifest in (render_pod(sbx), render_network_policy(sbx), render_service(sbx), render_pvc(sbx)):
        if manifest is not None:
            kubernetes_validate.validate(manifest, "1.34", strict=True)


def test_pss_checker_flags_a_root_privileged_pod() -> None:
    pod = render_pod(sandbox())
    pod["spec"]["hostNetwork"] = True
    pod["spec"]["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})
    sc = container(pod)["securityContext"]
    sc.update(privileged=True, allowPrivilegeEscalation=True, runAsNonRoot=False, capabilities={"add": ["SYS_ADMIN"]})
    assert len(restricted_violations(pod)) >= 6


def test_platform_placement_puts_pods_on_the_sandbox_node_pool_and_stays_restricted() -> None:
    toleration = {"key": "pool", "operator": "Equal", "value": "sandboxes", "effect": "NoSchedule"}
    defaults = OperatorDefaults(node_selector={"pool": "sandboxes"}, tolerations=(toleration,))
    pod = render_pod(SandboxObject.from_body(body({"image": "busybox"}), defaults))
    assert pod["spec"]["nodeSelector"] == {"pool": "sandboxes"}
    assert pod["spec"]["tolerations"] == [toleration]
    assert restricted_violations(pod) == []
    assert "nodeSelector" not in render_pod(sandbox({"image": "busybox"}))["spec"]


def test_platform_forbidden_egress_is_carved_out_of_allow_lists_and_internet() -> None:
    api_server = "10.96.0.1/32"
    defaults = OperatorDefaults(forbidden_egress=(api_server, "203.0.113.0/24"))
    spec = {"image": "busybox", "network": {"egress": {"mode": "AllowList", "allow": [
        {"cidr": "10.96.0.0/16"}, {"cidr": "10.96.0.1/32"}, {"cidr": "192.0.2.0/24"}]}}}
    policy = render_network_policy(SandboxObject.from_body(body(spec), defaults))
    blocks = [peer["ipBlock"] for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert {"cidr": "10.96.0.0/16", "except": [api_server]} in blocks
    assert all(block["cidr"] != api_server for block in blocks), "an entry inside a forbidden range is dropped"
    internet = render_network_policy(SandboxObject.from_body(
        body({"image": "busybox", "network": {"egress": {"mode": "Internet"}}}), defaults))
    v4 = next(p["ipBlock"] for r in internet["spec"]["egress"] for p in r["to"]
              if p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0")
    assert "203.0.113.0/24" in v4["except"]


def test_a_readiness_port_makes_the_pod_ready_only_when_it_listens() -> None:
    sbx = sandbox({"network": {"ports": [{"name": "http", "port": 8080}], "readinessPort": "http"}})
    probe = render_pod(sbx)["spec"]["containers"][0]["readinessProbe"]
    assert probe["tcpSocket"] == {"port": 8080}
    assert "readinessProbe" not in render_pod(sandbox())["spec"]["containers"][0]


@pytest.mark.parametrize(
    "network",
    [
        {"readinessPort": "http"},
        {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}], "readinessPort": "dns"},
        {"ports": [{"name": "http", "port": 8080}], "readinessPort": "web"},
    ],
)
def test_a_readiness_port_must_name_an_exposed_tcp_port(network: dict[str, Any]) -> None:
    loaded = load_sandbox(body({"network": network}))
    assert isinstance(loaded, InvalidSandbox)
    assert "spec.network: readinessPort must name an exposed TCP port" in loaded.error
