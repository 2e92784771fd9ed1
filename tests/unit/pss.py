"""A small checker of the Pod Security Standards `restricted` profile (baseline rules included), for pod manifests.

It follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ for the fields the operator can set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALLOWED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
ALLOWED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})


def _containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", []), *spec.get("ephemeralContainers", [])]


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """Every rule of the restricted profile the pod breaks; empty when it is admitted."""
    spec = pod["spec"]
    pod_sc = spec.get("securityContext") or {}
    problems = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"spec.{field} is true")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} has type {sorted(kinds)}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ALLOWED_SECCOMP:
        problems.append(f"pod seccompProfile is {pod_seccomp}")
    if pod_sc.get("sysctls"):
        problems.append("pod sets sysctls")
    for container in _containers(spec):
        name, sc = container["name"], container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"container {name} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name} does not set allowPrivilegeEscalation: false")
        run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            problems.append(f"container {name} does not run as non-root")
        if sc.get("runAsUser") == 0:
            problems.append(f"container {name} runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ALLOWED_SECCOMP:
            problems.append(f"container {name} seccompProfile is {seccomp}")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"container {name} does not drop ALL capabilities")
        added = set(capabilities.get("add", [])) - ALLOWED_ADDED_CAPABILITIES
        if added:
            problems.append(f"container {name} adds capabilities {sorted(added)}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"container {name} procMount is {sc['procMount']}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"container {name} uses a hostPort")
    return problems
