"""When a sandbox expires: the earliest of its absolute lifetime (ttlSeconds or expiresAt, and the tenant's maximum)
and its idle timeout.

Activity times come from clients (the annotation) and kubelets (the container start), whose clocks may be wrong or
whose values may be hostile. A time later than now plus MAX_CLOCK_SKEW counts as the moment the operator first saw it,
so a far-future annotation is one bump of activity, not a switch that turns idle expiry off; and activity only ever
moves the idle deadline, never the absolute lifetime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import SandboxObject
from sandbox_operator.api.schema import seconds_after, to_utc

# Clients' clocks may run a little ahead of the operator's; within this, their activity times are taken as written.
MAX_CLOCK_SKEW = timedelta(seconds=30)


@dataclass(frozen=True)
class Deadline:
    """A moment the sandbox expires at, why, and a message saying so."""

    at: datetime
    reason: c.Reason
    message: str


def activity_times(sandbox: SandboxObject, started_at: datetime | None) -> list[datetime]:
    """The signs of use as reported: the creation, the container start and the activity annotation."""
    candidates = [sandbox.creation_timestamp, started_at, sandbox.last_activity_annotation]
    return [to_utc(moment) for moment in candidates if moment is not None]


def future_times(times: Iterable[datetime], now: datetime) -> set[datetime]:
    """The times that lie beyond now plus the allowed clock skew (the shell remembers when it first saw each)."""
    return {moment for moment in times if moment > now + MAX_CLOCK_SKEW}


def last_activity(
    sandbox: SandboxObject,
    started_at: datetime | None,
    now: datetime,
    first_seen: Mapping[datetime, datetime] | None = None,
) -> datetime:
    """Latest sign of use; a time beyond now + MAX_CLOCK_SKEW counts as when it was first seen (now if never)."""
    seen, latest_trusted = first_seen or {}, now + MAX_CLOCK_SKEW
    return max(
        min(seen.get(moment, now), now) if moment > latest_trusted else moment
        for moment in activity_times(sandbox, started_at)
    )


def expiry_deadline(
    sandbox: SandboxObject,
    started_at: datetime | None,
    now: datetime,
    first_seen: Mapping[datetime, datetime] | None = None,
) -> Deadline | None:
    """The earliest deadline of the sandbox, or None if it never expires; on a tie the absolute lifetime wins."""
    lifetime, created = sandbox.spec.lifetime, to_utc(sandbox.creation_timestamp)
    deadlines = []
    if lifetime.ttl_seconds is not None:
        deadlines.append(
            Deadline(
                seconds_after(created, lifetime.ttl_seconds),
                c.Reason.TTL_EXPIRED,
                f"ttlSeconds ({lifetime.ttl_seconds}) elapsed since creation",
            )
        )
    if lifetime.expires_at is not None:
        deadlines.append(Deadline(to_utc(lifetime.expires_at), c.Reason.DEADLINE_REACHED, "expiresAt reached"))
    longest = sandbox.defaults.max_lifetime_seconds
    if longest is not None:
        deadlines.append(
            Deadline(
                seconds_after(created, longest),
                c.Reason.LIFETIME_LIMIT_REACHED,
                f"the tenant's limits.maxLifetimeSeconds ({longest}) elapsed since creation",
            )
        )
    if lifetime.idle_timeout_seconds is not None:
        deadlines.append(
            Deadline(
                seconds_after(
                    last_activity(sandbox, started_at, now, first_seen), lifetime.idle_timeout_seconds
                ),
                c.Reason.IDLE_TIMEOUT,
                f"no activity for idleTimeoutSeconds ({lifetime.idle_timeout_seconds})",
            )
        )
    return min(deadlines, key=lambda deadline: deadline.at, default=None)
