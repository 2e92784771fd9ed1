"""The chart's optional MCP server: off by default; when on, hardened like the operator, reachable on one port,
reaching only the API server, and allowed to do nothing but review tokens and impersonate its callers."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from localcluster.helm import KUBE_VERSION, find, template

from sandbox_operator.mcp_server.limits import McpSettings
from sandbox_operator.mcp_server.rbac import SERVER_RULES

ON = {"mcpServer.enabled": True, "mcpServer.settings": {"IMAGE": "python:3.11-slim", "MAX_COMMAND_SECONDS": 120}}
COMPONENT = "app.kubernetes.io/component"


def _mcp_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in template(values) if o["metadata"].get("labels", {}).get(COMPONENT) == "mcp-server"]


def test_the_mcp_server_is_off_by_default() -> None:
    assert _mcp_objects({}) == []


def test_when_on_its_objects_are_valid_and_its_role_is_exactly_the_server_rules() -> None:
    objects = _mcp_objects(ON)
    assert sorted(o["kind"] for o in objects) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "NetworkPolicy"]
    )
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION.rsplit(".", 1)[0] + ".0", strict=True)
    assert find(objects, "ClusterRole")["rules"] == SERVER_RULES
    binding = find(objects, "ClusterRoleBinding")
    account = find(objects, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": "sandbox-system"}]


def test_its_pod_is_hardened_and_its_settings_are_valid_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = find(_mcp_objects(ON), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert container["command"][-2:] == ["--transport", "http"]
    for variable in container["env"]:
        monkeypatch.setenv(variable["name"], variable["value"])
    settings = McpSettings()  # read from the environment, as the server does
    assert settings.host == "0.0.0.0" and settings.image == "python:3.11-slim"
    assert settings.max_command_seconds == 120 and settings.public_url.endswith(".sandbox-system.svc:8090")


def test_only_the_mcp_port_is_open_and_only_the_api_server_is_reached() -> None:
    objects = _mcp_objects({**ON, "mcpServer.networkPolicy.from": [{"namespaceSelector": {}}]})
    policy = find(objects, "NetworkPolicy")
    pod_labels = find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "mcp", "protocol": "TCP"}],
                                          "from": [{"namespaceSelector": {}}]}]
    assert {port["port"] for port in policy["spec"]["egress"][0]["ports"]} == {443, 6443}
    operator_policy = next(o for o in template(ON) if o["kind"] == "NetworkPolicy"
                           and o["metadata"]["labels"][COMPONENT] == "operator")
    assert not operator_policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
