"""Generated manifests: committed files match their generators, and each is valid for the API server."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from sandbox_operator import manifests
from sandbox_operator.api import crd
from sandbox_operator.api import names as c
from sandbox_operator.tenant.admission import render_admission_policy

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("relative", sorted(manifests.GENERATED))
def test_committed_manifest_matches_its_generator(relative: str) -> None:
    assert (ROOT / relative).read_text() == manifests.GENERATED[relative](), (
        f"{relative} is stale: run `.venv/bin/python -m sandbox_operator.manifests`"
    )


@pytest.mark.parametrize("relative", sorted(manifests.GENERATED))
def test_generated_manifest_is_valid_kubernetes(relative: str) -> None:
    kubernetes_validate.validate(yaml.safe_load((ROOT / relative).read_text()), "1.34", strict=True)


def test_tenant_crd_is_cluster_scoped_with_status_and_columns() -> None:
    spec = crd.tenant_crd()["spec"]
    assert spec["scope"] == "Cluster"
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert {column["name"] for column in version["additionalPrinterColumns"]} >= {"Namespace", "Ready", "Sandboxes"}


def test_tenant_namespace_is_immutable_in_the_schema() -> None:
    namespace = crd.tenant_schema()["properties"]["spec"]["properties"]["namespace"]
    assert any(rule["rule"] == "self == oldSelf" for rule in namespace["x-kubernetes-validations"])


def test_every_policy_rule_names_a_spec_field_in_its_message() -> None:
    probe, *rules = render_admission_policy()["spec"]["validations"]
    assert c.LABEL_ADMISSION_PROBE in probe["expression"]
    for validation in rules:
        assert "'spec." in validation["messageExpression"]
        assert validation["reason"] == "Invalid"


def test_policy_skips_metadata_only_updates() -> None:
    [condition] = render_admission_policy()["spec"]["matchConditions"]
    assert "object.spec != oldObject.spec" in condition["expression"]
