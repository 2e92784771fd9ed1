"""Every default a Sandbox's spec may leave unset, and which wins, in one place.

Precedence, highest first:
1. the Sandbox's own spec (``lifetime.ttlSeconds`` or ``expiresAt``, ``network.allowDNS``, ...);
2. its Tenant's ``defaults.ttlSeconds`` (a Sandbox in a tenant namespace), as ``tenant.handlers.TENANT_LIFETIMES``
   has it;
3. the operator's settings (``SANDBOX_OPERATOR_DEFAULT_TTL_SECONDS``, ``..._DEFAULT_ALLOW_DNS``).
Not defaults but limits, and never overridden: the Tenant's ``limits.maxLifetimeSeconds`` is a deadline of its own
(here it rides along into ``OperatorDefaults``), and what the platform sets for every pod (node selector, tolerations,
forbidden egress). The tenant admission policy refuses a Sandbox without a lifetime only when none of 1-2 gives one.
``api.sandbox.apply_operator_defaults`` fills the chosen values into the spec the operator acts on (never written
back).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sandbox_operator.api.sandbox import OperatorDefaults
from sandbox_operator.api.tenant import TenantLifetime
from sandbox_operator.settings import Settings


def operator_defaults(settings: Settings) -> OperatorDefaults:
    """The operator's own defaults and platform settings, from its configuration."""
    return OperatorDefaults(
        allow_dns=settings.default_allow_dns,
        ttl_seconds=settings.default_ttl_seconds,
        node_selector=settings.pod_node_selector,
        tolerations=tuple(t.model_dump(by_alias=True, exclude_none=True) for t in settings.pod_tolerations),
        forbidden_egress=tuple(settings.forbidden_egress_cidrs),
    )


def with_tenant_defaults(base: OperatorDefaults, lifetime: TenantLifetime | None) -> OperatorDefaults:
    """The operator's defaults for a Sandbox in a tenant namespace: the tenant's default TTL, if set, wins; the
    tenant's maximum lifetime becomes a deadline of its own."""
    if lifetime is None or lifetime == TenantLifetime():
        return base
    return replace(
        base,
        ttl_seconds=lifetime.default_ttl_seconds if lifetime.default_ttl_seconds is not None else base.ttl_seconds,
        max_lifetime_seconds=lifetime.max_lifetime_seconds,
    )


def sandbox_defaults(
    lifetime_of: Callable[[str], TenantLifetime | None], namespace: str, base: OperatorDefaults
) -> OperatorDefaults:
    """The defaults for a Sandbox in ``namespace``: the operator's, with its Tenant's lifetime rules if it has one
    (``lifetime_of`` finds them by tenant namespace: ``TENANT_LIFETIMES.get`` in tenant.handlers)."""
    return with_tenant_defaults(base, lifetime_of(namespace))
