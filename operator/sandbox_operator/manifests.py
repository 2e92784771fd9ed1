"""Every generated manifest the project ships, and where it is committed; `python -m sandbox_operator.manifests` writes
them all (run from the repository root). A unit test fails when a committed file drifts from its generator."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sandbox_operator.api.crd import pool_crd_yaml, sandbox_crd_yaml, template_crd_yaml, tenant_crd_yaml
from sandbox_operator.tenant.admission import render_admission_policy
from sandbox_operator.tenant.render import render_tenant_cluster_role, render_tenant_exec_cluster_role


def _yaml(generator: Callable[[], dict[str, Any]], source: str) -> Callable[[], str]:
    def text() -> str:
        header = f"# Generated from {source} by `python -m sandbox_operator.manifests`; do not edit.\n"
        return header + yaml.safe_dump(generator(), sort_keys=False, width=120, allow_unicode=True)

    return text


# Path relative to the repository root -> the text it must hold.
GENERATED: dict[str, Callable[[], str]] = {
    "crds/sandbox-operator.io_sandboxes.yaml": sandbox_crd_yaml,
    "crds/sandbox-operator.io_tenants.yaml": tenant_crd_yaml,
    "crds/sandbox-operator.io_sandboxtemplates.yaml": template_crd_yaml,
    "crds/sandbox-operator.io_sandboxpools.yaml": pool_crd_yaml,
    "deploy/tenant-clusterrole.yaml": _yaml(render_tenant_cluster_role, "sandbox_operator.tenant.render"),
    "deploy/tenant-exec-clusterrole.yaml": _yaml(render_tenant_exec_cluster_role, "sandbox_operator.tenant.render"),
    "deploy/tenant-admission-policy.yaml": _yaml(render_admission_policy, "sandbox_operator.tenant.admission"),
}


def write_all(root: Path) -> list[Path]:
    """Write every generated manifest under ``root``; return the paths written."""
    written = []
    for relative, text in GENERATED.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text())
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(path)
