"""The SDK and CLI install and import without the operator's runtime (Kopf and its settings, metrics, logging)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement

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
    probe = (
        "import sys\n"
        "import sandbox_operator.sdk, sandbox_operator.sdk.sync, sandbox_operator.cli\n"
        "operator = ('kopf', 'pydantic_settings', 'prometheus_client', 'pythonjsonlogger')\n"
        "inner = ('sandbox_operator.k8s', 'sandbox_operator.sandbox', 'sandbox_operator.tenant',\n"
        "         'sandbox_operator.operator', 'sandbox_operator.settings', 'sandbox_operator.metrics')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in operator or m.startswith(inner))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"the SDK pulled in {result.stdout.strip()}"
