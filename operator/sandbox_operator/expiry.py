"""When a sandbox expires: the earliest of its absolute lifetime (ttlSeconds or expiresAt) and its idle timeout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sandbox_operator import constants as c
from sandbox_operator.models import SandboxObject


@dataclass(frozen=True)
class Deadline:
    """A moment the sandbox expires at, why, and a message saying so."""

    at: datetime
    reason: c.Reason
    message: str


def last_activity(sandbox: SandboxObject, started_at: datetime | None) -> datetime:
    """Latest sign of use: the activity annotation, the container start or the creation, whichever is latest."""
    candidates = [sandbox.creation_timestamp, started_at, sandbox.last_activity_annotation]
    return max(moment for moment in candidates if moment is not None)


def expiry_deadline(sandbox: SandboxObject, started_at: datetime | None) -> Deadline | None:
    """The earliest deadline of the sandbox, or None if it never expires; on a tie the absolute lifetime wins."""
    lifetime = sandbox.spec.lifetime
    deadlines = []
    if lifetime.ttl_seconds is not None:
        deadlines.append(
            Deadline(
                sandbox.creation_timestamp + timedelta(seconds=lifetime.ttl_seconds),
                c.Reason.TTL_EXPIRED,
                f"ttlSeconds ({lifetime.ttl_seconds}) elapsed since creation",
            )
        )
    if lifetime.expires_at is not None:
        deadlines.append(Deadline(lifetime.expires_at, c.Reason.DEADLINE_REACHED, "expiresAt reached"))
    if lifetime.idle_timeout_seconds is not None:
        deadlines.append(
            Deadline(
                last_activity(sandbox, started_at) + timedelta(seconds=lifetime.idle_timeout_seconds),
                c.Reason.IDLE_TIMEOUT,
                f"no activity for idleTimeoutSeconds ({lifetime.idle_timeout_seconds})",
            )
        )
    return min(deadlines, key=lambda deadline: deadline.at, default=None)
