"""checkov, a Kubernetes manifest scanner, finds nothing but the accepted findings (tests/scan/checkov-baseline.yaml,
each with its reason) in the rendered chart and in the children the operator renders."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from localcluster.helm import template

from sandbox_operator.sandbox.render import render_network_policy, render_pod, render_pvc, render_service
from sandbox_operator.tenant.render import (
    render_default_deny,
    render_limit_range,
    render_namespace,
    render_resource_quota,
    render_role_binding,
)
from tests.unit.builders import sandbox
from tests.unit.tenant_builders import tenant

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "tests" / "scan" / "checkov-baseline.yaml"
# Installed by `make deps` in a virtualenv of its own (its dependencies would clash with the operator's pins).
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))


def _children() -> list[dict[str, Any]]:
    full = sandbox({
        "network": {"ports": [{"name": "http", "port": 8080}], "readinessPort": "http",
                    "egress": {"mode": "AllowList", "allow": [{"cidr": "203.0.113.0/24"}]}},
        "workspace": {"persistent": True},
    })
    manifests = [render_pod(full), render_network_policy(full), render_service(full), render_pvc(full),
                 render_pod(sandbox(name="plain")), render_network_policy(sandbox(name="plain"))]
    t = tenant()
    manifests += [render_namespace(t), render_resource_quota(t), render_limit_range(t), render_default_deny(t),
                  render_role_binding(t)]
    return [m for m in manifests if m is not None]


def _findings(directory: Path) -> list[tuple[str, str, str]]:
    result = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", "kubernetes", "-o", "json", "--quiet", "--compact"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 1: findings
    reports = json.loads(result.stdout or "[]")
    reports = reports if isinstance(reports, list) else [reports]
    return sorted({(f["check_id"], f["resource"], f["check_name"])
                   for report in reports for f in report.get("results", {}).get("failed_checks", [])})


def test_checkov_finds_nothing_but_the_accepted_findings(tmp_path: Path) -> None:
    if not CHECKOV.is_file():
        pytest.fail(f"checkov is not installed at {CHECKOV}: run `make deps`")
    everything = {"metrics.serviceMonitor.enabled": True, "metrics.prometheusRule.enabled": True,
                  "metrics.grafanaDashboard.enabled": True}
    (tmp_path / "chart.yaml").write_text(yaml.safe_dump_all(template(everything)))
    (tmp_path / "chart-namespaced.yaml").write_text(
        yaml.safe_dump_all(template({"operator.watchNamespaces": ["team-a"]}, release="ns")))
    (tmp_path / "children.yaml").write_text(yaml.safe_dump_all(_children()))
    accepted = yaml.safe_load(BASELINE.read_text())["accepted"]
    assert all(entry.get("reason") for entry in accepted), "every accepted finding needs its reason"
    new = [f"{check} {resource}: {name}" for check, resource, name in _findings(tmp_path)
           if not any(entry["check"] == check and re.search(entry["resource"], resource) for entry in accepted)]
    assert new == [], "new checkov findings (fix them, or accept them in tests/scan/checkov-baseline.yaml with why)"
