"""Names shared by the operator, its CRD and its children: each one is defined here and nowhere else."""

from enum import StrEnum
from typing import Final

GROUP: Final = "sandbox-operator.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "Sandbox"
LIST_KIND: Final = "SandboxList"
PLURAL: Final = "sandboxes"
SINGULAR: Final = "sandbox"
SHORT_NAMES: Final = ("sbx",)
CATEGORIES: Final = ("sandbox-operator", "all")
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# Labels put on every child; the sandbox label is what the NetworkPolicy and Service select on.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "sandbox-operator"
LABEL_NAME: Final = "app.kubernetes.io/name"
NAME: Final = "sandbox"
LABEL_SANDBOX: Final = f"{GROUP}/sandbox"

# Clients bump this annotation on the Sandbox (RFC 3339 time) to show activity and push back the idle timeout.
ANNOTATION_LAST_ACTIVITY: Final = f"{GROUP}/last-activity"
# A Sandbox made by a client's get-or-create for a key (e.g. user and project): the key as canonical JSON, and one
# label per key part holding a hash of its value (label values cannot hold arbitrary strings), so clients can list by
# part. api.keys derives the Sandbox's name from the key; the API server's "already exists" makes it unique.
ANNOTATION_KEY: Final = f"{GROUP}/key"
KEY_LABEL_PREFIX: Final = f"key.{GROUP}/"
LABEL_KEYED: Final = f"{GROUP}/keyed"
# Hash of the rendered child; a different hash means the child no longer matches the spec.
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"

# The distroless "nonroot" user: fixed so file ownership in a persistent workspace survives pod recreation.
SANDBOX_UID: Final = 65532
SANDBOX_GID: Final = 65532

CONTAINER_NAME: Final = "sandbox"
CHILD_PREFIX: Final = "sbx-"
TMP_VOLUME: Final = "tmp"
TMP_MOUNT_PATH: Final = "/tmp"
TMP_SIZE_LIMIT: Final = "256Mi"
WORKSPACE_VOLUME: Final = "workspace"
WORKSPACE_PVC_SUFFIX: Final = "-workspace"

# Link-local ranges hold cloud metadata endpoints (169.254.169.254, fd00:ec2::254); never reachable from a sandbox.
LINK_LOCAL_V4: Final = "169.254.0.0/16"
LINK_LOCAL_V6: Final = "fe80::/10"
AWS_METADATA_V6: Final = "fd00:ec2::254/128"
# "Internet" egress means public addresses: private, shared, loopback and link-local ranges are carved out, so the
# cluster network (pods, nodes, the API server) and metadata services stay unreachable.
NON_PUBLIC_V4: Final = (
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    LINK_LOCAL_V4,
    "172.16.0.0/12",
    "192.168.0.0/16",
)
NON_PUBLIC_V6: Final = ("::1/128", "fc00::/7", LINK_LOCAL_V6)

DNS_NAMESPACE: Final = "kube-system"
DNS_POD_LABELS: Final = {"k8s-app": "kube-dns"}
DNS_PORT: Final = 53

# Bounds on user input: they keep CEL validation cost estimates within the API server's budget.
MAX_NAME_LENGTH: Final = 63
MAX_IMAGE_LENGTH: Final = 512
MAX_ARGS: Final = 64
MAX_ARG_LENGTH: Final = 4096
MAX_ENV: Final = 64
MAX_ENV_VALUE_LENGTH: Final = 32768
MAX_ALLOW_RULES: Final = 32
MAX_RULE_PORTS: Final = 16
MAX_EXPOSED_PORTS: Final = 16
MAX_MESSAGE_LENGTH: Final = 1024
MAX_CONDITIONS: Final = 8


class ConditionType(StrEnum):
    """Condition types in `status.conditions`."""

    READY = "Ready"
    SUSPENDED = "Suspended"
    EXPIRED = "Expired"


class ConditionStatus(StrEnum):
    """Values of a condition's `status`."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    """Stable CamelCase reasons of conditions; clients may match on them."""

    # Ready
    POD_READY = "PodReady"
    POD_MISSING = "PodMissing"
    POD_PENDING = "PodPending"
    POD_NOT_READY = "PodNotReady"
    POD_TERMINATING = "PodTerminating"
    POD_FAILED = "PodFailed"
    SPEC_CHANGED = "SpecChanged"
    CONTAINER_CREATING = "ContainerCreating"
    CONTAINER_EXITED = "ContainerExited"
    CONTAINER_CONFIG_ERROR = "ContainerConfigError"
    OOM_KILLED = "OOMKilled"
    IMAGE_UNAVAILABLE = "ImageUnavailable"
    QUOTA_EXCEEDED = "QuotaExceeded"
    CREATE_REJECTED = "CreateRejected"
    INVALID_SPEC = "InvalidSpec"
    DELETING = "Deleting"
    # Someone else changed the pod's owned fields (image, labels, resources...): it is replaced.
    POD_TAMPERED = "PodTampered"
    # An object of the child's name exists and this Sandbox does not own it: it is never adopted or deleted.
    NAME_CONFLICT = "NameConflict"
    # The operator could not decide (a bug, or input it did not foresee); retried with backoff.
    RECONCILE_ERROR = "ReconcileError"
    # The SandboxTemplate named by templateRef does not exist: waited for (a running pod is kept).
    TEMPLATE_NOT_FOUND = "TemplateNotFound"
    # Suspended (and Ready=False while suspended)
    SUSPENDED = "Suspended"
    USER_REQUESTED = "UserRequested"
    NOT_SUSPENDED = "NotSuspended"
    # Expired (and Suspended/Ready when a lifetime ran out)
    TTL_EXPIRED = "TTLExpired"
    DEADLINE_REACHED = "DeadlineReached"
    IDLE_TIMEOUT = "IdleTimeout"
    LIFETIME_LIMIT_REACHED = "LifetimeLimitReached"
    NOT_EXPIRED = "NotExpired"


# Ready=False reasons that mean "this pod will not become ready by itself"; they set phase Failed.
FAILURE_REASONS: Final = frozenset(
    {
        Reason.POD_FAILED,
        Reason.CONTAINER_EXITED,
        Reason.CONTAINER_CONFIG_ERROR,
        Reason.OOM_KILLED,
        Reason.IMAGE_UNAVAILABLE,
        Reason.INVALID_SPEC,
        Reason.CREATE_REJECTED,
    }
)
EXPIRY_REASONS: Final = frozenset(
    {Reason.TTL_EXPIRED, Reason.DEADLINE_REACHED, Reason.IDLE_TIMEOUT, Reason.LIFETIME_LIMIT_REACHED}
)

# Container waiting reasons reported by the kubelet, and how they read in the Ready condition.
IMAGE_WAITING_REASONS: Final = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_WAITING_REASONS: Final = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
OOM_KILLED: Final = "OOMKilled"


class SandboxPhase(StrEnum):
    """One-word summary in `status.phase`; the conditions carry the detail.

    Pending: on its way (children being created, image pulling, pod not ready yet, quota exhausted).
    Ready: the pod runs and is ready. Suspended: suspended by the user, no pod.
    Expired: a lifetime ran out (deleted next, or kept suspended with onExpiry Suspend).
    Failed: will not become ready without a change (bad spec, image unavailable, container exited or OOMKilled).
    Terminating: the Sandbox is being deleted.
    """

    PENDING = "Pending"
    READY = "Ready"
    SUSPENDED = "Suspended"
    EXPIRED = "Expired"
    FAILED = "Failed"
    TERMINATING = "Terminating"


class EventType(StrEnum):
    """Kubernetes Event types."""

    NORMAL = "Normal"
    WARNING = "Warning"


class EventReason(StrEnum):
    """Reasons of Events emitted on a Sandbox, one per transition."""

    CREATED = "Created"
    READY = "Ready"
    EXPIRED = "Expired"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    FAILED = "Failed"
    TAMPERED = "Tampered"
    RECONCILE_ERROR = "ReconcileError"
    TEMPLATE_NOT_FOUND = "TemplateNotFound"


class OnExpiry(StrEnum):
    """What happens when a sandbox's lifetime runs out."""

    DELETE = "Delete"
    SUSPEND = "Suspend"


class EgressMode(StrEnum):
    """Egress allowed from a sandbox."""

    NONE = "None"
    ALLOW_LIST = "AllowList"
    INTERNET = "Internet"


class Protocol(StrEnum):
    """IP protocols a port rule may name."""

    TCP = "TCP"
    UDP = "UDP"


class PullPolicy(StrEnum):
    """Container image pull policies."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class Launch(StrEnum):
    """How a sandbox's pod started (``status.launch``)."""

    WARM = "Warm"
    COLD = "Cold"


class ChildKind(StrEnum):
    """Kinds of the objects the operator creates for a Sandbox."""

    POD = "Pod"
    SERVICE = "Service"
    NETWORK_POLICY = "NetworkPolicy"
    PVC = "PersistentVolumeClaim"


# --- Tenants ----------------------------------------------------------------------------------------------------------

TENANT_KIND: Final = "Tenant"
TENANT_LIST_KIND: Final = "TenantList"
TENANT_PLURAL: Final = "tenants"
TENANT_SINGULAR: Final = "tenant"
TENANT_SHORT_NAMES: Final = ("tnt",)
TENANT_CRD_NAME: Final = f"{TENANT_PLURAL}.{GROUP}"

# On every object rendered for a tenant: which Tenant it belongs to (child events find their Tenant by it).
LABEL_TENANT: Final = f"{GROUP}/tenant"
TENANT_NAME: Final = "tenant"

# Names of the objects rendered into a tenant's namespace (one of each per namespace).
TENANT_QUOTA_NAME: Final = "sandbox-tenant"
TENANT_LIMIT_RANGE_NAME: Final = "sandbox-tenant"
TENANT_NETWORK_POLICY_NAME: Final = "sandbox-tenant-default-deny"
TENANT_ROLE_BINDING_NAME: Final = "sandbox-tenant"
# Always rendered; it names the tenant's subjects only when the Tenant sets execAccess (no subjects grant nothing).
TENANT_EXEC_ROLE_BINDING_NAME: Final = "sandbox-tenant-exec"

# Shipped in deploy/: the roles the tenant's subjects are bound to (Sandboxes; with execAccess, also commands and logs
# in the namespace's pods), and the admission policy checking their Sandboxes.
TENANT_CLUSTER_ROLE: Final = "sandbox-operator-tenant"
TENANT_EXEC_CLUSTER_ROLE: Final = "sandbox-operator-tenant-exec"
TENANT_POLICY_NAME: Final = f"tenant-policy.{GROUP}"
TENANT_POLICY_BINDING_PREFIX: Final = "tenant-policy-"
# A Sandbox carrying this label is always refused by the tenant policy. Before granting access the operator dry-runs
# one in the tenant's namespace: the refusal proves the API server has loaded the binding and the Tenant (it does so
# asynchronously, up to a second or so after they are written).
LABEL_ADMISSION_PROBE: Final = f"{GROUP}/admission-probe"
ADMISSION_PROBE_MESSAGE: Final = "admission probe refused: the tenant policy is in effect"

# Pod Security Standards labels on a tenant namespace: enforce, audit and warn all at `restricted`.
POD_SECURITY_LEVEL: Final = "restricted"
POD_SECURITY_MODES: Final = ("enforce", "audit", "warn")
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"

# ResourceQuota resource names; one constant each so render, status and tests agree.
QUOTA_SANDBOXES: Final = f"count/{PLURAL}.{GROUP}"
QUOTA_PODS: Final = "pods"
QUOTA_SERVICES: Final = "services"
QUOTA_LOAD_BALANCERS: Final = "services.loadbalancers"
QUOTA_NODE_PORTS: Final = "services.nodeports"
QUOTA_PVCS: Final = "persistentvolumeclaims"
QUOTA_STORAGE: Final = "requests.storage"
GPU_RESOURCE: Final = "nvidia.com/gpu"

MAX_TENANT_SUBJECTS: Final = 32
MAX_IMAGE_PATTERNS: Final = 64
MAX_IMAGE_PATTERN_LENGTH: Final = 256
MAX_TENANT_CIDRS: Final = 32


class TenantConditionType(StrEnum):
    """Condition types in a Tenant's `status.conditions`."""

    READY = "Ready"


class TenantReason(StrEnum):
    """Stable CamelCase reasons of a Tenant's Ready condition."""

    PROVISIONED = "Provisioned"
    PROVISIONING = "Provisioning"
    WAITING_FOR_QUOTA = "WaitingForQuota"
    WAITING_FOR_POLICY = "WaitingForPolicy"
    NAMESPACE_CONFLICT = "NamespaceConflict"
    NAMESPACE_TERMINATING = "NamespaceTerminating"
    INVALID_SPEC = "InvalidSpec"
    APPLY_FAILED = "ApplyFailed"
    RECONCILE_ERROR = "ReconcileError"


class TenantChildKind(StrEnum):
    """Kinds of the objects the operator renders for a Tenant."""

    NAMESPACE = "Namespace"
    RESOURCE_QUOTA = "ResourceQuota"
    LIMIT_RANGE = "LimitRange"
    NETWORK_POLICY = "NetworkPolicy"
    ROLE_BINDING = "RoleBinding"
    POLICY_BINDING = "ValidatingAdmissionPolicyBinding"


class SubjectKind(StrEnum):
    """Kinds of RBAC subjects a Tenant may grant access to."""

    USER = "User"
    GROUP = "Group"
    SERVICE_ACCOUNT = "ServiceAccount"


# --- SandboxTemplates and SandboxPools -------------------------------------------------------------------------------

TEMPLATE_KIND: Final = "SandboxTemplate"
TEMPLATE_LIST_KIND: Final = "SandboxTemplateList"
TEMPLATE_PLURAL: Final = "sandboxtemplates"
TEMPLATE_SINGULAR: Final = "sandboxtemplate"
TEMPLATE_SHORT_NAMES: Final = ("sbxt",)
TEMPLATE_CRD_NAME: Final = f"{TEMPLATE_PLURAL}.{GROUP}"
POOL_KIND: Final = "SandboxPool"
POOL_LIST_KIND: Final = "SandboxPoolList"
POOL_PLURAL: Final = "sandboxpools"
POOL_SINGULAR: Final = "sandboxpool"
POOL_SHORT_NAMES: Final = ("sbxp",)
POOL_CRD_NAME: Final = f"{POOL_PLURAL}.{GROUP}"
MAX_POOL_REPLICAS: Final = 1000

# On every warm pod and on the pods claimed from it: the pool it was made by. The pool's fence (a deny-all
# NetworkPolicy) selects it, so a claimed pod stays fenced until, and beside, its own policy: it is never unselected.
LABEL_POOL: Final = f"{GROUP}/pool"
# On a warm pod: the hash of the recipe it was made from; a claim takes only a pod whose hash is the Sandbox's.
LABEL_RECIPE_HASH: Final = f"{GROUP}/recipe-hash"
# The pool's fence NetworkPolicy: `<pool>-fence`.
POOL_FENCE_SUFFIX: Final = "-fence"
# The namespace fence: a deny-all NetworkPolicy over every sandbox pod of a namespace (sandbox.fence). No other
# object of the operator's can take the name: a Sandbox's children start with CHILD_PREFIX, a pool's fence ends with
# POOL_FENCE_SUFFIX, a Tenant's policy is TENANT_NETWORK_POLICY_NAME.
NAMESPACE_FENCE_NAME: Final = "sandbox-default-deny"


class PodOrder(StrEnum):
    """How a cold pod is created next to its Sandbox's NetworkPolicy (the label of a metric)."""

    FENCED = "Fenced"  # together with it, behind the namespace fence
    POLICY_FIRST = "PolicyFirst"  # after it


class PoolReason(StrEnum):
    """Stable CamelCase reasons of a SandboxPool's Ready condition."""

    FILLED = "Filled"
    FILLING = "Filling"
    ROLLING = "Rolling"
    QUOTA_EXCEEDED = "QuotaExceeded"
    CREATE_REJECTED = "CreateRejected"
    TEMPLATE_NOT_FOUND = "TemplateNotFound"
    NOT_POOLABLE = "NotPoolable"
    FENCE_CONFLICT = "FenceConflict"
    INVALID_SPEC = "InvalidSpec"
