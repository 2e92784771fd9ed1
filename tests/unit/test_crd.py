"""The CRD is generated from the models: the committed YAML must match, and the schema must agree with the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings
from pydantic import BaseModel, ConfigDict

from sandbox_operator.api import crd
from sandbox_operator.api.sandbox import SandboxSpec
from tests.unit import strategies

CRD_FILE = Path(__file__).parents[2] / "crds" / "sandbox-operator.io_sandboxes.yaml"
SPEC_SCHEMA = crd.sandbox_schema()["properties"]["spec"]


def rules(node: dict[str, Any]) -> list[str]:
    return [rule["rule"] for rule in node.get("x-kubernetes-validations", [])]


def test_committed_crd_matches_the_models() -> None:
    assert CRD_FILE.read_text() == crd.sandbox_crd_yaml(), (
        "crds/ is stale: run `python -m sandbox_operator.api.crd > crds/sandbox-operator.io_sandboxes.yaml`"
    )


def test_crd_is_a_valid_custom_resource_definition() -> None:
    kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), "1.34", strict=True)


def test_crd_has_status_subresource_short_name_and_ready_columns() -> None:
    version = crd.sandbox_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert "sbx" in crd.sandbox_crd()["spec"]["names"]["shortNames"]
    paths = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}
    assert paths["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert paths["Reason"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert paths["Phase"] == ".status.phase"
    assert paths["Expires"] == ".status.expiresAt"


def test_quantities_are_int_or_string_with_the_quantity_pattern() -> None:
    cpu = SPEC_SCHEMA["properties"]["resources"]["properties"]["cpu"]
    assert cpu["x-kubernetes-int-or-string"] is True
    assert "type" not in cpu
    assert cpu["default"] == "500m"


def test_cross_field_rules_are_attached_where_they_apply() -> None:
    props = SPEC_SCHEMA["properties"]
    env_item = props["env"]["items"]
    assert "has(self.value) != has(self.valueFrom)" in rules(env_item)
    assert any("ttlSeconds" in rule and "expiresAt" in rule for rule in rules(props["lifetime"]))
    assert any("AllowList" in rule for rule in rules(props["network"]["properties"]["egress"]))
    assert any("quantity(" in rule for rule in rules(props["resources"]))


def test_persistent_workspace_identity_is_immutable() -> None:
    workspace_rules = rules(SPEC_SCHEMA["properties"]["workspace"])
    assert any("oldSelf.persistent" in rule for rule in workspace_rules)
    assert any("self.size == oldSelf.size" in rule for rule in workspace_rules)
    assert any("oldSelf.storageClassName" in rule for rule in workspace_rules)


def test_every_list_and_string_is_bounded() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "array":
            assert "maxItems" in node, path
            walk(node["items"], path + "[]")
        if node.get("type") == "string":
            assert "maxLength" in node or "enum" in node, path
        for name, child in node.get("properties", {}).items():
            assert child.get("description"), f"{path}.{name} has no description"
            walk(child, f"{path}.{name}")

    walk(SPEC_SCHEMA, "spec")
    walk(crd.sandbox_schema()["properties"]["status"], "status")


def test_generator_refuses_a_property_without_description() -> None:
    class Undocumented(BaseModel):
        model_config = ConfigDict(extra="forbid")
        field: int = 1

    with pytest.raises(crd.SchemaError, match="without description"):
        crd.model_schema(Undocumented, "x")  # type: ignore[arg-type]


@settings(max_examples=50)
@given(strategies.specs())
def test_crd_schema_accepts_every_spec_the_models_accept(spec: dict[str, Any]) -> None:
    dumped = SandboxSpec.model_validate(spec).model_dump(mode="json", by_alias=True, exclude_none=True)
    jsonschema.Draft4Validator(SPEC_SCHEMA).validate(dumped)
    jsonschema.Draft4Validator(SPEC_SCHEMA).validate(spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"templateRef": {}},
        {"templateRef": {"name": "Not_A_Name"}},
        {"image": "x", "imagePullPolicy": "Sometimes"},
        {"image": "x", "resources": {"cpu": "lots"}},
        {"image": "x", "network": {"ports": [{"name": "http", "port": 70000}]}},
        {"image": "x", "command": ["a"] * 65},
        {"image": "x" * 513},
    ],
)
def test_crd_schema_refuses_what_the_models_refuse(spec: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(SPEC_SCHEMA).validate(spec)
