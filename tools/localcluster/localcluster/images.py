"""Container images for the real node, built from Debian packages with no registry.

Each image is assembled here as an OCI image layout archive (uncompressed tar layers, a config,
a manifest, ``index.json``), cached under ``~/.cache/sandbox-operator/images/`` keyed by the hash
of its inputs, and imported into containerd's ``k8s.io`` namespace with ``ctr images import``.

Images (pods must use ``imagePullPolicy: IfNotPresent`` or ``Never``; there is no registry):

- ``docker.io/library/busybox:1.35.0``: Debian's static ``/bin/busybox`` (package ``busybox-static``)
  with an applet symlink for each command, ``/etc/passwd`` with ``nobody`` (65534), a 1777 ``/tmp``.
- ``localhost/sandbox-pause:1.0``: ``images/pause.c`` built with ``gcc -static``; the pod sandbox image.
- ``docker.io/library/python:3.11-slim``: Debian's ``python3.11`` and its library closure, unpacked from
  the ``.deb`` files ``apt-get download`` fetches (no maintainer scripts run; none are needed), with the busybox
  layer on top for the shell and tools the real image has (``sh``, ``setsid``, ``cat``, ``tar``...): the SDK runs
  commands and moves files through them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.binaries import CACHE_ROOT, cache_lock

IMAGE_CACHE = CACHE_ROOT / "images"
SOURCES = Path(__file__).resolve().parent / "images"
FORMAT_VERSION = "2"  # bump to rebuild every cached archive after a change to the assembly below

# Named like the public images they stand in for, so examples written for any cluster run here unchanged.
BUSYBOX = "docker.io/library/busybox:1.35.0"
PAUSE = "localhost/sandbox-pause:1.0"
PYTHON = "docker.io/library/python:3.11-slim"

BUSYBOX_BINARY = Path("/bin/busybox")
PYTHON_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib")
NOBODY = 65534
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def _log(message: str) -> None:
    print(f"[cluster-images] {message}", file=sys.stderr, flush=True)


class Layer:
    """A deterministic tar layer: every entry owned by root, mtime 0, in the order added."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self._names: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type, info.mode, info.mtime = kind, mode, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def directory(self, name: str, mode: int = 0o755) -> None:
        """Add a directory (once; later calls for the same path are ignored)."""
        if name.strip("/") in self._names:
            return
        self._names.add(name.strip("/"))
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file with ``data``."""
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._names.add(name.strip("/"))
        self._tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        """Add a symbolic link ``name -> target``."""
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._names.add(name.strip("/"))
        self._tar.addfile(info)

    def tree(self, root: Path) -> None:
        """Add everything under ``root`` (sorted), keeping modes and symlinks, normalising owners and times."""
        for path in sorted(root.rglob("*")):
            name = "/" + str(path.relative_to(root))
            mode = path.lstat().st_mode & 0o7777
            if path.is_symlink():
                self.symlink(name, os.readlink(path))
            elif path.is_dir():
                self.directory(name, mode)
            elif path.is_file():
                self.file(name, path.read_bytes(), mode)

    def tar_bytes(self) -> bytes:
        """Close the layer and return its tar stream."""
        self._tar.close()
        return self._buffer.getvalue()


def _base_layout(layer: Layer) -> None:
    for name in ("/bin", "/dev", "/etc", "/proc", "/sys", "/root", "/run", "/var"):
        layer.directory(name, 0o700 if name == "/root" else 0o755)
    layer.directory("/tmp", 0o1777)
    layer.file("/etc/passwd", PASSWD.encode())
    layer.file("/etc/group", GROUP.encode())


def _busybox_layer() -> bytes:
    layer = Layer()
    _base_layout(layer)
    layer.file("/bin/busybox", BUSYBOX_BINARY.read_bytes(), 0o755)
    applets = subprocess.run([str(BUSYBOX_BINARY), "--list"], check=True, capture_output=True, text=True).stdout
    for applet in sorted(set(applets.split()) - {"busybox"}):
        if "/" not in applet and applet not in ("[", "[["):
            layer.symlink(f"/bin/{applet}", "busybox")
    return layer.tar_bytes()


def _pause_layer() -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        binary = Path(scratch) / "pause"
        subprocess.run(
            ["gcc", "-static", "-O2", "-s", "-o", str(binary), str(SOURCES / "pause.c")], check=True
        )
        layer = Layer()
        layer.file("/pause", binary.read_bytes(), 0o755)
        return layer.tar_bytes()


# Not needed to run python: packaging tools, and mime-support's pull of perl (an alternative of media-types).
PACKAGES_LEFT_OUT = frozenset({"debconf", "dpkg", "perl-base", "perl", "tar", "install-info", "tzdata",
                               "mime-support", "mailcap", "readline-common"})


def _package_closure(packages: Iterable[str]) -> list[str]:
    """Debian packages ``packages`` need at run time (Depends and Pre-Depends, first alternative, recursively)."""
    seen: set[str] = set()
    frontier = set(packages)
    while frontier:
        seen |= frontier
        out = subprocess.run(
            ["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
             "--no-replaces", "--no-enhances", *sorted(frontier)],
            check=True, capture_output=True, text=True,
        ).stdout
        found, in_alternatives = set(), False
        for line in out.splitlines():
            kind, _, name = line.strip().partition(": ")
            if kind.lstrip("|") not in ("Depends", "PreDepends"):
                continue
            if not in_alternatives and "<" not in name:
                found.add(name.split(":")[0])
            in_alternatives = kind.startswith("|")  # later alternatives of this dependency are skipped
        frontier = found - seen - PACKAGES_LEFT_OUT
    return sorted(seen)


def _python_layer() -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        debs, root = Path(scratch) / "debs", Path(scratch) / "root"
        debs.mkdir()
        root.mkdir()
        packages = _package_closure(PYTHON_PACKAGES)
        _log(f"downloading {len(packages)} Debian packages for {PYTHON}")
        subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *packages],
                       cwd=debs, check=True, stdout=subprocess.DEVNULL)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        for unneeded in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "usr/share/lintian"):
            shutil.rmtree(root / unneeded, ignore_errors=True)
        (root / "usr/bin/python3").unlink(missing_ok=True)
        (root / "usr/bin/python3").symlink_to("python3.11")
        layer = Layer()
        _base_layout(layer)
        layer.tree(root)
        return layer.tar_bytes()


@dataclass(frozen=True)
class ImageSpec:
    """What one image is made of and how its containers start by default."""

    reference: str
    layers: Callable[[], list[bytes]]
    inputs: Callable[[], bytes]  # everything the layers are built from, for the cache key
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: str = ""
    env: tuple[str, ...] = ("PATH=/usr/local/bin:/usr/bin:/bin",)
    labels: dict[str, str] = field(default_factory=dict)

    def cache_key(self) -> str:
        digest = hashlib.sha256(FORMAT_VERSION.encode() + self.reference.encode() + self.inputs())
        return digest.hexdigest()[:12]

    def archive(self) -> Path:
        safe = self.reference.replace("/", "_").replace(":", "_")
        return IMAGE_CACHE / f"{safe}-{self.cache_key()}.oci.tar"


def _python_inputs() -> bytes:
    closure = _package_closure(PYTHON_PACKAGES)
    versions = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}=${Version}\n", *closure], capture_output=True, text=True
    ).stdout
    policy = subprocess.run(["apt-cache", "policy", *PYTHON_PACKAGES], capture_output=True, text=True).stdout
    return (" ".join(closure) + versions + policy).encode()


IMAGES: dict[str, ImageSpec] = {
    spec.reference: spec
    for spec in (
        ImageSpec(
            reference=BUSYBOX,
            layers=lambda: [_busybox_layer()],
            inputs=lambda: BUSYBOX_BINARY.read_bytes(),
            cmd=("sh",),
        ),
        ImageSpec(
            reference=PAUSE,
            layers=lambda: [_pause_layer()],
            inputs=lambda: (SOURCES / "pause.c").read_bytes(),
            entrypoint=("/pause",),
            user=f"{NOBODY}:{NOBODY}",
        ),
        ImageSpec(
            reference=PYTHON,
            layers=lambda: [_python_layer(), _busybox_layer()],
            inputs=lambda: _python_inputs() + BUSYBOX_BINARY.read_bytes(),
            cmd=("python3",),
        ),
    )
}


def _blob(blobs: dict[str, bytes], data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest, len(data)


def oci_layout(spec: ImageSpec, layers: list[bytes]) -> dict[str, bytes]:
    """Return the files of an OCI image layout (path -> bytes) holding ``layers`` as ``spec.reference``."""
    blobs: dict[str, bytes] = {}
    layer_descriptors, diff_ids = [], []
    for layer in layers:
        digest, size = _blob(blobs, layer)
        layer_descriptors.append({"mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": size})
        diff_ids.append(digest)  # uncompressed layers: the diff id is the blob digest
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": list(spec.entrypoint) or None,
            "Cmd": list(spec.cmd) or None,
            "User": spec.user,
            "Env": list(spec.env),
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.source": "sandbox-operator localcluster/images.py", **spec.labels},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "localcluster/images.py"}],
    }
    config_digest, config_size = _blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": layer_descriptors,
    }
    manifest_digest, manifest_size = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": spec.reference,
                    "org.opencontainers.image.ref.name": spec.reference.rsplit(":", 1)[1],
                },
            }
        ],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
    }
    files.update({f"blobs/sha256/{digest.split(':')[1]}": data for digest, data in blobs.items()})
    return files


def _write_archive(files: dict[str, bytes], target: Path) -> None:
    layer = Layer()
    layer.directory("blobs")
    layer.directory("blobs/sha256")
    for name, data in files.items():
        layer.file(name, data)
    staging = target.with_suffix(".partial")
    staging.write_bytes(layer.tar_bytes())
    staging.rename(target)


def build_image(spec: ImageSpec) -> Path:
    """Return the cached OCI archive of ``spec``, building it if the cache has none for its inputs."""
    target = spec.archive()
    if target.is_file():
        return target
    stem = target.name.rsplit("-", 1)[0]
    with cache_lock(target.with_name(stem)):  # one builder of this reference at a time
        if target.is_file():
            return target
        _log(f"building {spec.reference} -> {target}")
        _write_archive(oci_layout(spec, spec.layers()), target)
        for stale in target.parent.glob(f"{stem}-*.oci.tar"):  # older builds of the same reference
            if stale != target:
                stale.unlink(missing_ok=True)
    return target


def import_image(spec: ImageSpec, containerd_socket: Path) -> None:
    """Import ``spec``'s archive into containerd's ``k8s.io`` namespace (unpacked for overlayfs)."""
    archive = build_image(spec)
    subprocess.run(
        ["ctr", "--address", str(containerd_socket), "-n", "k8s.io", "images", "import",
         "--snapshotter", "overlayfs", "--platform", "linux/amd64", str(archive)],
        check=True, capture_output=True, text=True,
    )


def ensure_images(containerd_socket: Path, references: Iterable[str] = (BUSYBOX, PAUSE)) -> list[str]:
    """Build (or reuse) and import the named images; return the references imported."""
    imported = []
    for reference in references:
        import_image(IMAGES[reference], containerd_socket)
        imported.append(reference)
    return imported


if __name__ == "__main__":
    wanted = sys.argv[1:] or [BUSYBOX, PAUSE]
    for reference in wanted:
        print(f"{reference}\t{build_image(IMAGES[reference])}")
