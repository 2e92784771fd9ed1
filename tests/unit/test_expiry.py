"""Expiry deadlines: the earliest of the absolute lifetime and the idle timeout, whatever times the inputs hold."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import Lifetime, OperatorDefaults, SandboxObject
from sandbox_operator.api.schema import LATEST_TIME, format_time, parse_time
from sandbox_operator.sandbox.expiry import MAX_CLOCK_SKEW, expiry_deadline, last_activity
from tests.unit.builders import at, body, sandbox

NOW = at(100)


def test_no_lifetime_never_expires() -> None:
    assert expiry_deadline(sandbox(), started_at=at(5), now=NOW) is None


def test_earliest_deadline_wins() -> None:
    sbx = sandbox({"lifetime": {"ttlSeconds": 600, "idleTimeoutSeconds": 60}})
    deadline = expiry_deadline(sbx, started_at=at(5), now=NOW)
    assert deadline is not None
    assert (deadline.at, deadline.reason) == (at(65), c.Reason.IDLE_TIMEOUT)


def test_absolute_lifetime_wins_a_tie() -> None:
    lifetime = {"lifetime": {"ttlSeconds": 60, "idleTimeoutSeconds": 60}}
    deadline = expiry_deadline(sandbox(lifetime), started_at=None, now=NOW)
    assert deadline is not None
    assert deadline.reason == c.Reason.TTL_EXPIRED


def test_activity_is_the_latest_of_annotation_start_and_creation() -> None:
    sbx = sandbox(annotations={c.ANNOTATION_LAST_ACTIVITY: "2025-01-01T12:00:30Z"})
    assert last_activity(sbx, started_at=at(5), now=NOW) == at(30)
    assert last_activity(sbx, started_at=at(50), now=NOW) == at(50)
    assert last_activity(sandbox(), started_at=None, now=NOW) == at(0)


def test_a_far_future_activity_counts_as_when_it_was_first_seen_and_never_moves_the_ttl() -> None:
    spec = {"lifetime": {"ttlSeconds": 25, "idleTimeoutSeconds": 60}}
    sbx = sandbox(spec, annotations={c.ANNOTATION_LAST_ACTIVITY: "9999-12-31T23:59:59Z"})
    future = parse_time("9999-12-31T23:59:59Z")
    assert last_activity(sbx, started_at=at(5), now=at(10)) == at(10)
    # Seen first at 10 s: later passes keep counting it from then, so the idle timeout still runs out.
    assert last_activity(sbx, started_at=at(5), now=at(50), first_seen={future: at(10)}) == at(10)
    deadline = expiry_deadline(sbx, started_at=at(5), now=at(20), first_seen={future: at(10)})
    assert deadline is not None
    assert (deadline.at, deadline.reason) == (at(25), c.Reason.TTL_EXPIRED)


def test_an_activity_time_within_the_clock_skew_is_taken_as_written() -> None:
    ahead = at(100) + MAX_CLOCK_SKEW
    sbx = sandbox(annotations={c.ANNOTATION_LAST_ACTIVITY: format_time(ahead)})
    assert last_activity(sbx, started_at=None, now=at(100)) == ahead


def test_a_future_pod_start_counts_as_now() -> None:
    assert last_activity(sandbox(), started_at=at(10_000), now=at(100)) == at(100)


def test_the_tenants_maximum_lifetime_is_a_deadline_of_its_own() -> None:
    raw = body({"lifetime": {"expiresAt": "2026-01-01T00:00:00Z", "idleTimeoutSeconds": 3600}})
    sbx = SandboxObject.from_body(raw, OperatorDefaults(max_lifetime_seconds=600))
    deadline = expiry_deadline(sbx, started_at=None, now=NOW)
    assert deadline is not None
    assert (deadline.at, deadline.reason) == (at(600), c.Reason.LIFETIME_LIMIT_REACHED)


@pytest.mark.parametrize("text", ["9999-12-31T23:30:00-01:00", "9999-06-01T00:00:00Z", "0001-01-01T00:30:00+01:00"])
def test_an_expires_at_outside_the_computable_range_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(ValidationError, match="expiresAt"):
        Lifetime.model_validate({"expiresAt": text})


@pytest.mark.parametrize("text", ["9998-12-31T09:59:59-14:00", "9998-12-31T23:59:59Z"])
def test_an_expires_at_at_the_edge_of_the_range_is_computed_with(text: str) -> None:
    sbx = sandbox({"lifetime": {"expiresAt": text, "idleTimeoutSeconds": 60}})
    deadline = expiry_deadline(sbx, started_at=None, now=NOW)
    assert deadline is not None and deadline.reason == c.Reason.IDLE_TIMEOUT
    assert format_time(sbx.spec.lifetime.expires_at) == "9998-12-31T23:59:59Z"  # type: ignore[arg-type]


def test_times_beyond_what_python_can_hold_are_clamped_not_raised() -> None:
    assert parse_time("9999-12-31T23:30:00-01:00") == LATEST_TIME
    assert parse_time("0001-01-01T00:30:00+01:00") == datetime(1970, 1, 1, tzinfo=UTC)
    assert format_time(datetime.fromisoformat("9999-12-31T23:30:00-01:00")) == "9999-01-01T00:00:00Z"
