"""Run the helm binary built from its pinned Go module (tools/localcluster/localcluster/build/helm) on the chart."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from localcluster import binaries
from localcluster.paths import CHART

KUBE_VERSION = "1.34.0"  # the local cluster's; helm's own default follows its client-go (1.37)


def helm_binary() -> Path:
    """The cached helm binary, built on first use (~3 min with Go)."""
    return binaries.ensure_binaries(("helm",))["helm"]


def helm(*args: str, check: bool = True, kubeconfig: Path | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run helm; ``kubeconfig`` for commands that reach a cluster."""
    env_args = [f"--kubeconfig={kubeconfig}"] if kubeconfig else []
    return subprocess.run([str(helm_binary()), *env_args, *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


def uninstall(release: str, namespace: str, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    """``helm uninstall`` that returns once everything the release made is gone, its Deployment's pods included.

    With the default (background) cascade, ``--wait`` waits for the Deployment only; its ReplicaSet and pods are then
    removed by the garbage collector, after helm has returned. ``--cascade foreground`` keeps the Deployment until
    they are gone, so the wait covers them.
    """
    return helm("uninstall", release, "--namespace", namespace, "--wait", "--cascade", "foreground",
                "--timeout", "180s", kubeconfig=kubeconfig, check=False, timeout=240)


def set_args(values: dict[str, Any]) -> list[str]:
    """``--set-json key=value`` for each (dotted) key, so types survive (lists, null, integers)."""
    import json

    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def template(values: dict[str, Any] | None = None, *extra: str, release: str = "sbx",
             namespace: str = "sandbox-system") -> list[dict[str, Any]]:
    """The chart's rendered objects (``helm template``), CRDs excluded unless ``--include-crds`` is passed."""
    result = helm("template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
                  *set_args(values or {}), *extra)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    """The one object of ``kind`` (whose name ends with ``name_suffix``)."""
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"{len(matches)} {kind} objects named *{name_suffix}"
    return matches[0]
