"""Build the local cluster's binaries from pinned Go modules and cache them by content hash.

Each build module under ``tools/localcluster/localcluster/build/<name>`` pins its versions in ``go.mod`` /
``go.sum``; the cache key is a hash of those files, so a version bump rebuilds and an
unchanged checkout reuses ``~/.cache/sandbox-operator/bin/<name>-<hash>/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

BUILD_ROOT = Path(__file__).resolve().parent / "build"
CACHE_ROOT = Path(os.environ.get("SANDBOX_OPERATOR_CACHE", Path.home() / ".cache" / "sandbox-operator"))


def _required_version(gomod: Path, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", gomod.read_text(), re.M)
    if not match:
        raise RuntimeError(f"{gomod} does not require {module}")
    return match.group(1)


def _kubernetes_ldflags(gomod: Path) -> str:
    version = _required_version(gomod, "k8s.io/kubernetes")
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(["-s", "-w", *flags])


def _helm_ldflags(gomod: Path) -> str:
    """Helm's own Makefile flags: its version, and the Kubernetes version it assumes (client-go's minor, 1.x)."""
    version = _required_version(gomod, "helm.sh/helm/v3")
    minor = _required_version(gomod, "k8s.io/client-go").lstrip("v").split(".")[1]
    flags = [f"-X helm.sh/helm/v3/internal/version.version={version}",
             "-X helm.sh/helm/v3/internal/version.gitTreeState=clean"]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={minor}"]
    return " ".join(["-s", "-w", *flags])


@dataclass(frozen=True)
class BuildModule:
    """One pinned Go build module and the commands it produces."""

    name: str
    packages: dict[str, str]  # binary name -> Go package path ("." for the module's own main)
    ldflags: str = "-s -w"
    version_module: str = ""
    extra_files: tuple[str, ...] = field(default=())

    @property
    def source(self) -> Path:
        return BUILD_ROOT / self.name

    @property
    def version(self) -> str:
        return _required_version(self.source / "go.mod", self.version_module)

    def cache_key(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(p.name for p in self.source.iterdir() if p.is_file()):
            digest.update(name.encode())
            digest.update((self.source / name).read_bytes())
        digest.update(self.ldflags.encode())
        return f"{self.name}-{self.version}-{digest.hexdigest()[:12]}"

    def bin_dir(self) -> Path:
        return CACHE_ROOT / "bin" / self.cache_key()


def _modules() -> list[BuildModule]:
    k8s_gomod = BUILD_ROOT / "kubernetes" / "go.mod"
    return [
        BuildModule(
            name="etcd",
            packages={"etcd": "."},
            version_module="go.etcd.io/etcd/server/v3",
        ),
        BuildModule(
            name="kubernetes",
            packages={
                name: f"k8s.io/kubernetes/cmd/{name}"
                for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet")
            },
            ldflags=_kubernetes_ldflags(k8s_gomod),
            version_module="k8s.io/kubernetes",
        ),
        BuildModule(
            name="kube-router",
            packages={"kube-router": "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"},
            ldflags="-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version="
            + _required_version(BUILD_ROOT / "kube-router" / "go.mod", "github.com/cloudnativelabs/kube-router/v2"),
            version_module="github.com/cloudnativelabs/kube-router/v2",
        ),
        BuildModule(
            name="kwok",
            packages={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
            version_module="sigs.k8s.io/kwok",
        ),
        BuildModule(
            name="helm",
            packages={"helm": "helm.sh/helm/v3/cmd/helm"},
            ldflags=_helm_ldflags(BUILD_ROOT / "helm" / "go.mod"),
            version_module="helm.sh/helm/v3",
        ),
    ]


MODULES = {m.name: m for m in _modules()}


def _log(message: str) -> None:
    print(f"[cluster-build] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def cache_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on building ``target`` in the shared cache: a second process (another checkout's tests,
    a bench) waits for the first one's build instead of deleting its half-finished output."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.with_name(target.name + ".lock").open("w") as lock:
        if not _try_lock(lock):
            _log(f"waiting for another process building {target.name}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def build_module(module: BuildModule) -> Path:
    """Build every command of ``module`` unless its cache directory is complete; return that directory."""
    target = module.bin_dir()
    if all((target / name).is_file() for name in module.packages):
        return target
    with cache_lock(target):
        if all((target / name).is_file() for name in module.packages):
            return target  # built by the process we waited for
        return _build(module, target)


def _build(module: BuildModule, target: Path) -> Path:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log_path = CACHE_ROOT / "logs" / f"{module.cache_key()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    started = time.monotonic()
    with log_path.open("w") as log:
        for binary, package in module.packages.items():
            _log(f"building {binary} ({module.name} {module.version}); log: {log_path}")
            command = ["go", "build", "-trimpath", f"-ldflags={module.ldflags}", "-o", str(staging / binary), package]
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            result = subprocess.run(command, cwd=module.source, env=env, stdout=log, stderr=subprocess.STDOUT)
            if result.returncode != 0:
                raise RuntimeError(f"building {binary} failed (exit {result.returncode}); see {log_path}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    _log(f"built {module.name} in {time.monotonic() - started:.0f}s -> {target}")
    return target


def ensure_binaries(names: tuple[str, ...] = tuple(MODULES)) -> dict[str, Path]:
    """Return ``{binary: path}`` for every command of the named build modules, building what is missing."""
    if shutil.which("go") is None:
        raise RuntimeError("the Go toolchain is required to build the local cluster (https://go.dev/doc/install)")
    paths: dict[str, Path] = {}
    for name in names:
        module = MODULES[name]
        directory = build_module(module)
        paths.update({binary: directory / binary for binary in module.packages})
    return paths


if __name__ == "__main__":
    for binary, path in ensure_binaries().items():
        print(f"{binary}\t{path}")
