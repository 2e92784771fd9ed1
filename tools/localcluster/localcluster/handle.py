"""A handle to the cluster the tests, benchmarks and the demo run against.

Either the local cluster (started here, or already running from ``make cluster-up``), or an
existing cluster named by ``SANDBOX_OPERATOR_TEST_KUBECONFIG`` (e.g. kind on a laptop).
Plain ``KUBECONFIG`` is deliberately not used: tests create and delete namespaces, and
must never land on a cluster someone happened to have selected.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client, config

from . import binaries
from .controlplane import ControlPlane

EXTERNAL_KUBECONFIG_ENV = "SANDBOX_OPERATOR_TEST_KUBECONFIG"


@dataclass
class Cluster:
    """Where the cluster is and how to talk to it."""

    kubeconfig: Path
    kubectl_path: str
    external: bool
    control_plane: ControlPlane | None = None
    owned: bool = False  # True when this handle started the cluster and must stop it

    def api_client(self, kubeconfig: Path | None = None) -> client.ApiClient:
        """A synchronous API client for ``kubeconfig`` (the admin one by default)."""
        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None,
                check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster and return the completed process."""
        return subprocess.run(
            [self.kubectl_path, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, check=check, timeout=timeout,
        )

    def user_kubeconfig(self, path: Path, user: str, groups: tuple[str, ...] = ()) -> Path:
        """Mint a kubeconfig for ``user`` in ``groups`` through the CertificateSigningRequest API.

        Works the same on the local cluster and on kind: the controller manager signs
        ``kubernetes.io/kube-apiserver-client`` requests once they are approved.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
        subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject)).sign(key, hashes.SHA256())
        api = client.CertificatesV1Api(self.api_client())
        name = f"test-user-{user}-{int(time.time() * 1000)}".replace(":", "-").lower()[:63]
        api.create_certificate_signing_request(client.V1CertificateSigningRequest(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1CertificateSigningRequestSpec(
                request=base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
                signer_name="kubernetes.io/kube-apiserver-client",
                usages=["client auth"],
                expiration_seconds=3600,
            ),
        ))
        approval = api.read_certificate_signing_request(name)
        approval.status.conditions = [client.V1CertificateSigningRequestCondition(
            type="Approved", status="True", reason="TestUser", message="approved by the test harness")]
        api.replace_certificate_signing_request_approval(name, approval)
        deadline = time.monotonic() + 60
        certificate = None
        while time.monotonic() < deadline and not certificate:
            certificate = api.read_certificate_signing_request(name).status.certificate
            time.sleep(0.2)
        api.delete_certificate_signing_request(name)
        if not certificate:
            raise TimeoutError(f"CSR {name} was not signed within 60s")
        admin = yaml.safe_load(self.kubeconfig.read_text())
        current = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
        cluster_entry = next(c for c in admin["clusters"] if c["name"] == current["cluster"])
        user_config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster_entry],
            "users": [{"name": user, "user": {
                "client-certificate-data": certificate,
                "client-key-data": base64.b64encode(key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
                )).decode(),
            }}],
            "contexts": [{"name": user, "context": {"cluster": cluster_entry["name"], "user": user}}],
            "current-context": user,
        }
        path.write_text(yaml.safe_dump(user_config))
        path.chmod(0o600)
        return path

    def close(self) -> None:
        """Stop the cluster if this handle started it."""
        if self.owned and self.control_plane is not None:
            self.control_plane.stop()


def connect(start: bool = True) -> Cluster:
    """Return a handle to the external cluster, the running local one, or (``start``) a new local one."""
    external = os.environ.get(EXTERNAL_KUBECONFIG_ENV)
    if external:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise RuntimeError(f"{EXTERNAL_KUBECONFIG_ENV} is set but kubectl is not on PATH")
        return Cluster(kubeconfig=Path(external), kubectl_path=kubectl, external=True)
    plane = ControlPlane()
    status = plane.status()
    owned = False
    if not (status["running"] and status.get("ready")):
        if not start:
            raise RuntimeError("no local cluster is running (make cluster-up)")
        plane.start()
        owned = True
    kubectl = binaries.ensure_binaries(("kubernetes",))["kubectl"]
    state_kubeconfig = Path(plane.status()["kubeconfig"])
    return Cluster(kubeconfig=state_kubeconfig, kubectl_path=str(kubectl), external=False,
                   control_plane=plane, owned=owned)
