"""The only module that talks to the Kubernetes API server (besides Kopf's own watching).

Every call is counted in ``sandbox_operator_api_requests_total``; "already exists" on create and
"not found" on delete count as done, so every write is idempotent and safe to repeat.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import aiohttp
from kubernetes_asyncio import client, config

from sandbox_operator import metrics
from sandbox_operator.api import names as c
from sandbox_operator.api.connection import resolve_environment_once
from sandbox_operator.k8s import codec
from sandbox_operator.k8s.redaction import redact

# Every request's limit, connecting included.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)
# HTTP statuses worth retrying: conflicts, throttling, server trouble.
TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP code (0 when the server was not reached)."""

    def __init__(self, verb: str, resource: str, status: int, message: str) -> None:
        super().__init__(f"{verb} {resource}: {status} {message}")
        self.verb, self.resource, self.status, self.message = verb, resource, status, message

    @property
    def transient(self) -> bool:
        """Whether a retry may succeed without any change to the spec."""
        # A new namespace's default ServiceAccount appears a moment after the namespace.
        missing_account = "error looking up service account" in self.message
        return self.status == 0 or self.status in TRANSIENT_STATUSES or missing_account

    @property
    def quota_exceeded(self) -> bool:
        """Whether ResourceQuota admission refused the request."""
        return self.status == 403 and "exceeded quota" in self.message


def _message(body: bytes, status: int) -> str:
    """The API server's message on a refusal (its Status object's), redacted; else the HTTP status's reason."""
    try:
        message = codec.loads(body or b"{}").get("message")
    except (AttributeError, TypeError, ValueError):  # not JSON, or not an object
        message = None
    if message is not None:
        return redact(str(message))
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


# Where each kind lives in the REST API: (path prefix, plural).
PATHS: dict[str, tuple[str, str]] = {
    c.ChildKind.POD: ("/api/v1", "pods"),
    c.ChildKind.SERVICE: ("/api/v1", "services"),
    c.ChildKind.PVC: ("/api/v1", "persistentvolumeclaims"),
    c.ChildKind.NETWORK_POLICY: ("/apis/networking.k8s.io/v1", "networkpolicies"),
    c.KIND: (f"/apis/{c.GROUP}/{c.VERSION}", c.PLURAL),
    c.TENANT_KIND: (f"/apis/{c.GROUP}/{c.VERSION}", c.TENANT_PLURAL),
    c.TEMPLATE_KIND: (f"/apis/{c.GROUP}/{c.VERSION}", c.TEMPLATE_PLURAL),
    c.POOL_KIND: (f"/apis/{c.GROUP}/{c.VERSION}", c.POOL_PLURAL),
    c.TenantChildKind.NAMESPACE: ("/api/v1", "namespaces"),
    c.TenantChildKind.RESOURCE_QUOTA: ("/api/v1", "resourcequotas"),
    c.TenantChildKind.LIMIT_RANGE: ("/api/v1", "limitranges"),
    c.TenantChildKind.ROLE_BINDING: ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    c.TenantChildKind.POLICY_BINDING: ("/apis/admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings"),
}
# Kinds without a namespace: their paths have no /namespaces/<ns> part.
CLUSTER_SCOPED = frozenset({c.TENANT_KIND, c.TenantChildKind.NAMESPACE, c.TenantChildKind.POLICY_BINDING})
MERGE_PATCH = "application/merge-patch+json"
PEERING_GROUP = "kopf.dev/v1"
# The children that are brought back to their rendering in place; a pod is immutable, a claim's size only grows.
REPLACEABLE = frozenset({c.ChildKind.NETWORK_POLICY, c.ChildKind.SERVICE})
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "sandbox-operator"


def _check_kind(kind: str, manifest: Mapping[str, Any]) -> None:
    if manifest.get("kind") != kind:
        raise ValueError(f"a {manifest.get('kind')} manifest passed as {kind}")


def _path(kind: str, namespace: str | None, name: str = "", subresource: str = "") -> str:
    """REST path of an object or collection (``namespace`` is ignored for cluster-scoped kinds)."""
    prefix, plural = PATHS[kind]
    collection = f"{prefix}/{plural}" if kind in CLUSTER_SCOPED else f"{prefix}/namespaces/{namespace}/{plural}"
    return "/".join(part for part in (collection, name, subresource) if part)


class Kube:
    """Async API access over one shared connection pool; bodies are plain dicts in and out."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    @classmethod
    async def connect(cls) -> Kube:
        """Load in-cluster credentials, else the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``)."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config(client_configuration=configuration)
        api = client.ApiClient(configuration)
        resolve_environment_once(api)
        api.user_agent = FIELD_MANAGER  # the API server names our writes after it in managedFields
        return cls(api)

    async def close(self) -> None:
        """Release the connection pool."""
        await self.api.close()

    async def _exchange(
        self, method: str, path: str, body: Any, content_type: str, query: list[tuple[str, str]] | None
    ) -> tuple[int, bytes]:
        """One HTTP exchange over the ApiClient's session, with its TLS settings, proxy and credentials (a token it
        refreshes is read through it on every request): the status and the body as received.

        kubernetes_asyncio's ``call_api`` would do the same with more work per request: it walks the body to
        sanitize it, runs a regular expression on the content type and wraps the response twice before decoding it.
        Bodies here are plain JSON values already; they are written and read by ``codec`` (the README's Benchmarks:
        a cold burst's create->Ready, before and after)."""
        rest = self.api.rest_client
        headers = {**self.api.default_headers, "Accept": "application/json", "Content-Type": content_type}
        query = list(query or ())
        await self.api.update_params_for_auth(headers, query, ["BearerToken"])
        url = f"{self.api.configuration.host}{path}" + (f"?{urlencode(query)}" if query else "")
        options: dict[str, Any] = {}
        if rest.proxy:
            options["proxy"] = rest.proxy
        if rest.proxy_headers:
            options["proxy_headers"] = rest.proxy_headers
        if rest.server_hostname:
            options["server_hostname"] = rest.server_hostname
        data = None if body is None else codec.dumps(body)
        async with rest.pool_manager.request(method, url, data=data, headers=headers, timeout=REQUEST_TIMEOUT,
                                             **options) as response:
            return response.status, await response.read()

    async def _request(
        self, verb: str, kind: str, method: str, path: str, body: Any = None, *,
        content_type: str = "application/json", ok: frozenset[int] = frozenset(),
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any] | None:
        """Send one request, count it, and turn failures into KubeError (statuses in ``ok`` return None)."""
        try:
            status, data = await self._exchange(method, path, body, content_type, query)
        except (OSError, TimeoutError, aiohttp.ClientError) as error:  # refused/reset, dropped, DNS, TLS, timeouts
            metrics.API_REQUESTS.labels(verb, kind, "0").inc()
            raise KubeError(verb, kind, 0, str(error) or type(error).__name__) from None
        if not 200 <= status < 300:
            metrics.API_REQUESTS.labels(verb, kind, str(status)).inc()
            if status in ok:
                return None
            raise KubeError(verb, kind, status, _message(data, status))
        metrics.API_REQUESTS.labels(verb, kind, "2xx").inc()
        try:
            result = codec.loads(data) if data else None
        except ValueError:  # a 2xx that is not JSON: nothing to return (nothing here reads one)
            return None
        return result if isinstance(result, dict) else None

    # Methods that take a rendered manifest also take its kind, typed: it bounds what they can write, and
    # tests/rbac.py derives the operator's RBAC from those types.

    async def create(self, kind: c.ChildKind, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create a Sandbox's child and return it as the API server stored it; None when an object of that name
        already exists (whose it is, the caller finds out)."""
        _check_kind(kind, manifest)
        namespace = manifest["metadata"]["namespace"]
        return await self._request("create", kind, "POST", _path(kind, namespace), dict(manifest), ok=frozenset({409}))

    async def replace(self, kind: c.ChildKind, manifest: Mapping[str, Any]) -> None:
        """Replace a mutable child with the rendered manifest (PUT): whatever others added to its spec, labels or
        annotations is gone; what the API server assigned (a Service's clusterIP) it keeps."""
        _check_kind(kind, manifest)
        if kind not in REPLACEABLE:
            raise ValueError(f"{kind} is never replaced: pods are recreated, claims kept")
        meta = manifest["metadata"]
        await self._request("update", kind, "PUT", _path(kind, meta["namespace"], meta["name"]), dict(manifest))

    async def peering_present(self, name: str, namespace: str | None) -> bool:
        """Whether Kopf's peering object exists (cluster-wide when ``namespace`` is None). It lists with the
        permission Kopf's own peering holds anyway, so it needs no grant of its own."""
        path = (f"/apis/{PEERING_GROUP}/clusterkopfpeerings" if namespace is None
                else f"/apis/{PEERING_GROUP}/namespaces/{namespace}/kopfpeerings")
        found = await self._request("list", "KopfPeering", "GET", path,
                                    query=[("fieldSelector", f"metadata.name={name}")], ok=frozenset({404}))
        return bool((found or {}).get("items"))  # 404: not even the peering CRD is installed

    async def list_page(
        self, kind: str, namespace: str | None, *, label_selector: str | None = None, limit: int = 500,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        """One page of a LIST (every namespace when ``namespace`` is None); its ``metadata.continue`` names the next."""
        prefix, plural = PATHS[kind]
        path = _path(kind, namespace) if namespace is not None else f"{prefix}/{plural}"
        query = [("limit", str(limit))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if continue_token:
            query.append(("continue", continue_token))
        return await self._request("list", kind, "GET", path, query=query) or {}

    async def get_child(self, kind: c.ChildKind, namespace: str, name: str) -> dict[str, Any] | None:
        """Read a Sandbox's child (or whatever holds its name); None when there is none."""
        return await self.get(kind, namespace, name)

    async def delete(self, kind: c.ChildKind, namespace: str, name: str) -> None:
        """Delete a child; already gone counts as done."""
        await self._request("delete", kind, "DELETE", _path(kind, namespace, name), ok=frozenset({404}))

    async def delete_sandbox(self, namespace: str, name: str, uid: str) -> None:
        """Delete the Sandbox with this uid (a newer one of the same name is left alone); children follow by GC."""
        options = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        await self._request("delete", c.KIND, "DELETE", _path(c.KIND, namespace, name), options,
                            ok=frozenset({404, 409}))

    async def _write_status(
        self, kind: str, namespace: str | None, name: str, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Write a complete new status: a merge patch that also clears the keys ``new`` no longer has."""
        status: dict[str, Any] = {key: None for key in old if key not in new}
        status.update(new)
        return await self._request(
            "patch", f"{kind}/status", "PATCH", _path(kind, namespace, name, "status"), {"status": status},
            content_type=MERGE_PATCH, ok=frozenset({404}),
        )

    async def patch_status(
        self, namespace: str, name: str, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Write a Sandbox's complete new status; return the updated Sandbox."""
        return await self._write_status(c.KIND, namespace, name, old, new)

    # --- SandboxPools: warm pods, claims ----------------------------------------------------------------------------

    async def create_warm_pod(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create a pool's warm pod (named by the API server from its generateName); return it as created."""
        _check_kind(c.ChildKind.POD, manifest)
        kind = c.ChildKind.POD
        return await self._request("create", kind, "POST", _path(kind, manifest["metadata"]["namespace"]),
                                   dict(manifest)) or {}

    async def claim_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge-patch a warm pod into a Sandbox's (labels, owner, spec hash); ``patch`` carries the resourceVersion
        the claim was decided on, so of two claimers one wins. None: lost (claimed or deleted meanwhile)."""
        kind = c.ChildKind.POD
        return await self._request("claim", kind, "PATCH", _path(kind, namespace, name), dict(patch),
                                   content_type=MERGE_PATCH, ok=frozenset({404, 409}))

    async def delete_unclaimed(self, namespace: str, name: str, version: str) -> bool | None:
        """Delete a pool's warm pod unless it changed since ``version`` (a Sandbox may have claimed it meanwhile).
        True: deleted; False: it had changed (the watch brings the change); None: it was gone already."""
        kind = c.ChildKind.POD
        options = {"preconditions": {"resourceVersion": version}} if version else {}
        try:
            await self._request("delete", kind, "DELETE", _path(kind, namespace, name), options)
        except KubeError as error:
            if error.status in (404, 409):
                return None if error.status == 404 else False
            raise
        return True

    async def patch_pool_status(
        self, namespace: str, name: str, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Write a SandboxPool's complete new status; return the updated pool."""
        return await self._write_status(c.POOL_KIND, namespace, name, old, new)

    # --- Tenants: cluster-scoped objects too, written by server-side apply -------------------------------------------

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """Read one object; None when it does not exist."""
        return await self._request("get", kind, "GET", _path(kind, namespace, name), ok=frozenset({404}))

    async def create_object(self, kind: c.TenantChildKind, manifest: Mapping[str, Any]) -> None:
        """Create a Tenant's child (namespaced or cluster-scoped); one of that name already existing counts as done."""
        _check_kind(kind, manifest)
        namespace = manifest["metadata"].get("namespace")
        await self._request("create", kind, "POST", _path(kind, namespace), dict(manifest), ok=frozenset({409}))

    async def apply(self, kind: c.TenantChildKind, manifest: Mapping[str, Any]) -> None:
        """Server-side apply (forced) as FIELD_MANAGER: creates a Tenant's child or brings every field we own to
        the manifest, removing fields we set before and no longer render."""
        _check_kind(kind, manifest)
        meta = manifest["metadata"]
        await self._request(
            "apply", kind, "PATCH", _path(kind, meta.get("namespace"), meta["name"]), dict(manifest),
            content_type=APPLY_PATCH, query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    async def patch_tenant_status(
        self, name: str, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Write a Tenant's complete new status; return the updated Tenant."""
        return await self._write_status(c.TENANT_KIND, None, name, old, new)

    async def dry_run_sandbox(self, manifest: Mapping[str, Any]) -> KubeError | None:
        """Create a Sandbox with dryRun=All (nothing is stored); return the API server's refusal, or None if it
        would accept it. Only ever a Sandbox: it probes whether admission policy is in force."""
        _check_kind(c.KIND, manifest)
        try:
            await self._request("dry-run", c.KIND, "POST", _path(c.KIND, manifest["metadata"]["namespace"]),
                                dict(manifest), query=[("dryRun", "All")])
        except KubeError as error:
            if error.transient:
                raise
            return error
        return None
