"""The SDK and CLI install and import without the operator's runtime (Kopf and its settings, metrics, logging)."""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement

from tests.unit.imports import modules_loaded_by

OPERATOR_ONLY = {"kopf", "pydantic-settings", "prometheus-client", "python-json-logger"}


def _name(requirement: Requirement) -> str:
    return requirement.name.lower().replace("_", "-")


def test_installing_the_distribution_without_extras_pulls_no_operator_runtime() -> None:
    requirements = [Requirement(line) for line in metadata.requires("sandbox-operator") or []]
    core = {_name(r) for r in requirements if r.marker is None}
    operator = {_name(r) for r in requirements if r.marker is not None and r.marker.evaluate({"extra": "operator"})}
    assert core == {"kubernetes-asyncio", "pydantic", "pyyaml"}
    assert operator >= OPERATOR_ONLY, "the operator extra carries what the operator imports"


def test_importing_the_sdk_and_cli_loads_neither_kopf_nor_the_operator() -> None:
    operator = ("kopf", "pydantic_settings", "prometheus_client", "pythonjsonlogger")
    inner = ("sandbox_operator.k8s", "sandbox_operator.sandbox", "sandbox_operator.tenant",
             "sandbox_operator.operator", "sandbox_operator.settings", "sandbox_operator.metrics")
    loaded = modules_loaded_by(["sandbox_operator.sdk", "sandbox_operator.sdk.sync", "sandbox_operator.cli"],
                               operator + inner)
    assert loaded == [], f"the SDK pulled in {','.join(loaded)}"
