"""The operator process: what every kind's handlers share (the API door, the operator's defaults) and Kopf's
start-up and shutdown."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

import kopf

from sandbox_operator import metrics
from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import OperatorDefaults
from sandbox_operator.k8s import watch
from sandbox_operator.k8s.client import Kube, KubeError
from sandbox_operator.sandbox.defaults import operator_defaults
from sandbox_operator.settings import Settings

logger = logging.getLogger(__name__)


# The kinds the operator watches only as children of its own objects (pods, Services, claims and NetworkPolicies by
# its own streams, k8s.watch; the Tenants' other objects by Kopf). Not namespaces (few, and Kopf's own namespace
# observer would take the selector too, and then miss the namespaces it is told to serve).
WATCHED_CHILDREN: tuple[str | tuple[str, str], ...] = (
    "pods",
    "services",
    "persistentvolumeclaims",
    ("networking.k8s.io", "networkpolicies"),
    "resourcequotas",
    "limitranges",
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"),
)


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf keeps the last-handled state of every object for change handlers (on.create, on.update, ...), and builds
    it (a deep copy of the whole body, then a diff) on every watch event. This operator has no change handlers, only
    event handlers, so that state is never read: building none saves a deep copy per event (about 5% of the CPU in
    a burst). tests/unit/test_cache.py fails if a change handler is ever registered."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        """An empty essence: nothing to compare."""
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        """No last-handled state is kept."""
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Nothing is kept."""


@dataclass
class Runtime:
    """Operator-wide objects, shared by every handler through the global memo."""

    kube: Kube
    defaults: OperatorDefaults
    # Settings.status_settle_seconds and Settings.progress_events (as written, these defaults write and post all).
    status_settle_seconds: float = 0.0
    progress_events: bool = True


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """Connect to the API, serve metrics and tune Kopf (no finalizers, bounded retries, peering)."""
    config: Settings = memo["settings"]
    memo["runtime"] = Runtime(
        kube=await Kube.connect(),
        defaults=operator_defaults(config),
        status_settle_seconds=config.status_settle_seconds,
        progress_events=config.progress_events,
    )
    metrics.serve(config.metrics_port)
    settings.posting.level = logging.WARNING  # Events are posted explicitly, one per transition
    settings.posting.reporting_component = c.MANAGED_BY  # `kubectl describe` shows "From: sandbox-operator"
    settings.posting.reporting_instance = socket.gethostname()  # the replica (its pod name under the chart)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # Every child (a Sandbox's pod, policy, Service, claim; a Tenant's objects) carries the managed-by label: the API
    # server sends only those (a cluster's other pods are never sent, parsed or kept). A child whose label is removed
    # leaves the watch as DELETED; its owner then reads it and puts it right.
    for resource in WATCHED_CHILDREN:
        settings.watching.label_selectors[resource] = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY}"
    settings.watching.chunk_size = 500  # the listing a page at a time: no 10,000-object response in memory at once
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.peering.name = config.peering_name
    settings.peering.priority = config.peering_priority
    settings.peering.lifetime = config.peering_lifetime
    settings.peering.standalone = config.standalone
    settings.peering.mandatory = not config.standalone
    settings.peering.stealth = True
    if not config.standalone:
        await _warn_without_peering(memo["runtime"].kube, config)
    watch.start(settings, list(config.namespaces))
    logger.info("sandbox-operator started; metrics on :%d", config.metrics_port)


async def _warn_without_peering(kube: Kube, config: Settings) -> None:
    """Say plainly when the peering object is missing: without it Kopf waits and the operator does nothing."""
    try:
        scopes: list[str | None] = list(config.namespaces) or [None]
        missing = [ns or "cluster-wide" for ns in scopes if not await kube.peering_present(config.peering_name, ns)]
    except KubeError as error:
        logger.warning("could not check for the Kopf peering object %r: %s", config.peering_name, error)
        return
    if missing:
        logger.warning(
            "the Kopf peering object %r does not exist (%s): this replica will wait for it and reconcile nothing. "
            "The Helm chart creates it; without the chart create it (kind %s, see crds/kopf.dev_peerings.yaml) or "
            "run a single replica with SANDBOX_OPERATOR_STANDALONE=true",
            config.peering_name, ", ".join(missing), "ClusterKopfPeering" if not config.namespaces else "KopfPeering",
        )


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    """Stop the children's streams; close the API connection pool."""
    await watch.stop()
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.kube.close()
