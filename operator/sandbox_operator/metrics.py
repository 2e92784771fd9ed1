"""Prometheus metrics of the operator, served on ``Settings.metrics_port``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()

SANDBOXES = Gauge(
    "sandbox_operator_sandboxes",
    "Sandboxes this replica sees, by namespace and phase.",
    ["namespace", "phase"],
    registry=REGISTRY,
)
READY_LATENCY = Histogram(
    "sandbox_operator_ready_latency_seconds",
    "Time from a Sandbox's creation to its first Ready=True, by launch: Warm (a pod claimed from a SandboxPool) or "
    "Cold (a pod of its own).",
    ["launch"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 300, 600),
    registry=REGISTRY,
)
LAUNCHES = Counter(
    "sandbox_operator_launches_total",
    "Sandbox pods started, by launch: Warm (claimed from a SandboxPool) or Cold (created for the Sandbox).",
    ["launch"],
    registry=REGISTRY,
)
POD_CREATES = Counter(
    "sandbox_operator_pod_creates_total",
    "Passes that create a Sandbox's cold pod and its NetworkPolicy, by order: Fenced (together, behind the "
    "namespace's deny-all fence) or PolicyFirst (the policy first: no fence as rendered yet, or a Sandbox served "
    "before, whose children are read first).",
    ["namespace", "order"],
    registry=REGISTRY,
)
NAMESPACE_FENCED = Gauge(
    "sandbox_operator_namespace_fenced",
    "Each namespace's fence as this replica's watch shows it: 1 as rendered (a new Sandbox's pod is created together "
    "with its NetworkPolicy), 0 changed (pods go policy-first until a new Sandbox has it put back); no sample: none.",
    ["namespace"],
    registry=REGISTRY,
)
CLAIMS_LOST = Counter(
    "sandbox_operator_claims_lost_total",
    "Claims of a warm pod that lost a race (the pod changed or went meanwhile); another pod or a cold start follows.",
    registry=REGISTRY,
)
POOL_PODS = Gauge(
    "sandbox_operator_pool_pods",
    "Warm pods of each SandboxPool: desired (spec.replicas), current (of the current recipe) and ready.",
    ["namespace", "pool", "state"],
    registry=REGISTRY,
)
EXPIRATIONS = Counter(
    "sandbox_operator_expirations_total",
    "Sandboxes that reached their deadline, by reason (TTLExpired, DeadlineReached, LifetimeLimitReached, "
    "IdleTimeout) and action.",
    ["reason", "action"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "sandbox_operator_reconcile_errors_total",
    "Failed reconciliations by kind: temporary (retried), rejected (the API refused a request), decide (the "
    "decision raised: reported as ReconcileError), unexpected (a bug elsewhere).",
    ["kind"],
    registry=REGISTRY,
)
RECONCILES_SKIPPED = Counter(
    "sandbox_operator_reconciles_skipped_total",
    "Watch events not reconciled because they carried nothing a decision reads (the echo of the operator's own "
    "status write, a child whose summary did not change), by kind.",
    ["kind"],
    registry=REGISTRY,
)
RECONCILES = Counter(
    "sandbox_operator_reconciles_total",
    "Reconciliations run, by trigger.",
    ["trigger"],
    registry=REGISTRY,
)
REPAIRS = Counter(
    "sandbox_operator_child_repairs_total",
    "Children someone else changed that the operator put back (replaced, or a pod deleted and recreated), by kind.",
    ["kind"],
    registry=REGISTRY,
)
REPAIR_CONFLICTS = Counter(
    "sandbox_operator_child_repair_conflicts_total",
    "Repairs needed again soon after the last one (another writer fights the operator over a field), by kind; "
    "such repairs are held back with exponential delay.",
    ["kind"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "sandbox_operator_api_requests_total",
    "Requests the operator sent to the Kubernetes API, by verb, resource and HTTP status code.",
    ["verb", "resource", "code"],
    registry=REGISTRY,
)


def serve(port: int) -> None:
    """Start the /metrics HTTP endpoint in a background thread."""
    start_http_server(port, registry=REGISTRY)
