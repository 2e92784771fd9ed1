"""The Sandbox and Tenant CustomResourceDefinitions, generated from the pydantic models so the two can never drift.

Regenerate the committed files with `python -m sandbox_operator.api.crd > crds/sandbox-operator.io_sandboxes.yaml` and
`python -m sandbox_operator.api.crd --tenant > crds/sandbox-operator.io_tenants.yaml` (or write every generated manifest
at once with `python -m sandbox_operator.manifests`).
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import SandboxSpec, SandboxStatus
from sandbox_operator.api.schema import DNS_LABEL_PATTERN
from sandbox_operator.api.tenant import TenantSpec, TenantStatus

HEADER = "# Generated from sandbox_operator.api.sandbox by `python -m sandbox_operator.api.crd`; do not edit.\n"
TENANT_HEADER = (
    "# Generated from sandbox_operator.api.tenant by `python -m sandbox_operator.api.crd --tenant`; do not edit.\n"
)

# Keywords a structural schema may carry and that this generator knows how to pass on; anything else pydantic emits
# (exclusiveMinimum as a number, const, oneOf, ...) fails loudly instead of producing a CRD the API server refuses.
_ALLOWED_KEYWORDS = frozenset(
    {
        "type",
        "description",
        "properties",
        "required",
        "items",
        "enum",
        "default",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "pattern",
        "format",
        "anyOf",
        "x-kubernetes-int-or-string",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
    }
)


# Order of keys in each emitted node, so the YAML reads type and description first.
_KEY_ORDER = [
    "type",
    "description",
    "required",
    *sorted(_ALLOWED_KEYWORDS - {"type", "description", "required", "properties", "items"}),
    "items",
    "properties",
]


class SchemaError(ValueError):
    """The models produced a schema that cannot become a structural CRD schema."""


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every `$ref` by a copy of its definition; keys beside the `$ref` (a field's description) win."""
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        target.update({key: value for key, value in node.items() if key != "$ref"})
        return _inline_refs(target, defs)
    return {key: _inline_refs(value, defs) for key, value in node.items()}


def _drop_null_branch(node: dict[str, Any]) -> dict[str, Any]:
    """Turn pydantic's `anyOf: [X, null]` for optional fields into X: in Kubernetes an unset field is absent."""
    branches = node.get("anyOf")
    if not branches or node.get("x-kubernetes-int-or-string"):
        return node
    kept = [branch for branch in branches if branch.get("type") != "null"]
    if len(kept) != 1:
        raise SchemaError(f"cannot express anyOf {branches!r} in a structural schema")
    merged = {key: value for key, value in node.items() if key != "anyOf"}
    merged = {**kept[0], **merged}
    if merged.get("default", ...) is None:
        del merged["default"]
    return merged


def _structural(node: dict[str, Any], path: str) -> dict[str, Any]:
    """Clean one schema node into structural form and check the bounds the API server's CEL cost estimate needs."""
    node = _drop_null_branch(node)
    node = {key: value for key, value in node.items() if key not in ("title", "additionalProperties")}
    unknown = set(node) - _ALLOWED_KEYWORDS
    if unknown:
        raise SchemaError(f"{path}: unsupported schema keywords {sorted(unknown)}")
    kind = node.get("type")
    if kind == "string" and "maxLength" not in node and "enum" not in node:
        raise SchemaError(f"{path}: string without maxLength")
    if kind == "array":
        if "maxItems" not in node:
            raise SchemaError(f"{path}: list without maxItems")
        node["items"] = _structural(node["items"], f"{path}[]")
    if kind == "object":
        properties = {}
        for name, child in node.get("properties", {}).items():
            if not child.get("description"):
                raise SchemaError(f"{path}.{name}: property without description")
            properties[name] = _structural(child, f"{path}.{name}")
        node["properties"] = properties
    if "description" in node:
        # Docstrings wrap at the source's line length; kubectl explain re-wraps, so one line reads best.
        node["description"] = " ".join(node["description"].split())
        # kubectl explain shows an int-or-string as <Object> and no default: the description says both.
        if node.get("x-kubernetes-int-or-string"):
            node["description"] += " A Kubernetes quantity: an integer or a string (500m, 2, 512Mi, 1Gi)."
        default = node.get("default")
        if isinstance(default, bool | int | str) and default != "" and "Default" not in node["description"]:
            shown = str(default).lower() if isinstance(default, bool) else default
            node["description"] += f" Default: {shown}."
    return {key: node[key] for key in sorted(node, key=_KEY_ORDER.index)}


def model_schema(model: type[BaseModel], path: str) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model: refs inlined, optional fields plain, every bound checked."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_inline_refs(raw, defs), path)


def sandbox_schema() -> dict[str, Any]:
    """The `openAPIV3Schema` of the Sandbox resource."""
    spec = model_schema(SandboxSpec, "spec")
    status = model_schema(SandboxStatus, "status")
    return {
        "type": "object",
        "description": (
            "A Sandbox is a locked-down pod for running untrusted code, with a size-limited workspace, a default-deny "
            "network policy and a lifetime after which it is deleted or suspended."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "API version of this object: sandbox-operator.io/v1alpha1.",
            },
            "kind": {"type": "string", "description": "Kind of this object: Sandbox."},
            "metadata": METADATA_SCHEMA,
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [_name_rule()],
    }


# metadata's schema is built in; a CRD may only declare `name` (and generateName), which the rule below needs as its
# fieldPath.
METADATA_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"name": {"type": "string"}}}


def _name_rule() -> dict[str, str]:
    """The rule on metadata.name shared by every kind, reported at that field (not at the object's root)."""
    return {
        # The name becomes part of other objects' names and label values, so it must be a short DNS label.
        "rule": f"size(self.metadata.name) <= {c.MAX_NAME_LENGTH} && self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
        "message": "metadata.name must be a DNS label (lowercase letters, digits, '-') of at most 63 chars",
        "fieldPath": ".metadata.name",
        "reason": "FieldValueInvalid",
    }


def _ready_column(name: str, field_name: str, description: str, condition: str) -> dict[str, Any]:
    """A printer column reading one field of the `condition` condition (Ready and its reason)."""
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].{field_name}',
        "description": description,
    }


def sandbox_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of `sandboxes.sandbox-operator.io` as a plain dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": c.CRD_NAME, "labels": {c.LABEL_NAME: c.MANAGED_BY}},
        "spec": {
            "group": c.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": c.KIND,
                "listKind": c.LIST_KIND,
                "plural": c.PLURAL,
                "singular": c.SINGULAR,
                "shortNames": list(c.SHORT_NAMES),
                "categories": list(c.CATEGORIES),
            },
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": sandbox_schema()},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        _ready_column("Ready", "status", "Whether the sandbox is ready.", c.ConditionType.READY),
                        _ready_column("Reason", "reason", "Why the sandbox is or is not ready.", c.ConditionType.READY),
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Phase."},
                        {
                            "name": "Expires",
                            "type": "string",  # a date column shows <invalid> for future times
                            "jsonPath": ".status.expiresAt",
                            "description": "When the sandbox expires.",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
                    ],
                }
            ],
        },
    }


def sandbox_crd_yaml() -> str:
    """The CRD as the YAML committed under crds/."""
    return HEADER + yaml.safe_dump(sandbox_crd(), sort_keys=False, width=120, allow_unicode=True)




def tenant_schema() -> dict[str, Any]:
    """The `openAPIV3Schema` of the Tenant resource."""
    return {
        "type": "object",
        "description": (
            "A Tenant is a namespace the operator creates and owns, with a ResourceQuota (including a count of "
            "Sandboxes), a LimitRange, a default-deny NetworkPolicy, an admission policy checking every Sandbox "
            "against the tenant's limits, and a RoleBinding letting its subjects manage Sandboxes and nothing else."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": f"API version of this object: {c.API_VERSION}."},
            "kind": {"type": "string", "description": f"Kind of this object: {c.TENANT_KIND}."},
            "metadata": METADATA_SCHEMA,
            "spec": model_schema(TenantSpec, "spec"),
            "status": model_schema(TenantStatus, "status"),
        },
        "x-kubernetes-validations": [_name_rule()],
    }


TENANT_READY = c.TenantConditionType.READY


def tenant_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of `tenants.sandbox-operator.io` (cluster-scoped) as a plain dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": c.TENANT_CRD_NAME, "labels": {c.LABEL_NAME: c.MANAGED_BY}},
        "spec": {
            "group": c.GROUP,
            "scope": "Cluster",
            "names": {
                "kind": c.TENANT_KIND,
                "listKind": c.TENANT_LIST_KIND,
                "plural": c.TENANT_PLURAL,
                "singular": c.TENANT_SINGULAR,
                "shortNames": list(c.TENANT_SHORT_NAMES),
                "categories": ["sandbox-operator"],
            },
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": tenant_schema()},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Namespace", "type": "string", "jsonPath": ".spec.namespace",
                         "description": "The tenant's namespace."},
                        _ready_column("Ready", "status", "Whether the tenant is provisioned.", TENANT_READY),
                        _ready_column("Reason", "reason", "Why the tenant is or is not ready.", TENANT_READY),
                        {"name": "Sandboxes", "type": "string", "jsonPath": ".status.usage.sandboxes.used",
                         "description": "Sandboxes in use."},
                        {"name": "Max", "type": "integer", "jsonPath": ".spec.quota.maxSandboxes",
                         "description": "Most Sandboxes at once."},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def tenant_crd_yaml() -> str:
    """The Tenant CRD as the YAML committed under crds/."""
    return TENANT_HEADER + yaml.safe_dump(tenant_crd(), sort_keys=False, width=120, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(tenant_crd_yaml() if "--tenant" in sys.argv[1:] else sandbox_crd_yaml())
