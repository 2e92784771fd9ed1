"""Expiry deadlines: the earliest of the absolute lifetime and the idle timeout."""

from __future__ import annotations

from sandbox_operator import constants as c
from sandbox_operator.expiry import expiry_deadline, last_activity
from tests.unit.builders import at, sandbox


def test_no_lifetime_never_expires() -> None:
    assert expiry_deadline(sandbox(), started_at=at(5)) is None


def test_earliest_deadline_wins() -> None:
    sbx = sandbox({"lifetime": {"ttlSeconds": 600, "idleTimeoutSeconds": 60}})
    deadline = expiry_deadline(sbx, started_at=at(5))
    assert deadline is not None
    assert (deadline.at, deadline.reason) == (at(65), c.Reason.IDLE_TIMEOUT)


def test_absolute_lifetime_wins_a_tie() -> None:
    deadline = expiry_deadline(sandbox({"lifetime": {"ttlSeconds": 60, "idleTimeoutSeconds": 60}}), started_at=None)
    assert deadline is not None
    assert deadline.reason == c.Reason.TTL_EXPIRED


def test_activity_is_the_latest_of_annotation_start_and_creation() -> None:
    sbx = sandbox(annotations={c.ANNOTATION_LAST_ACTIVITY: "2025-01-01T12:00:30Z"})
    assert last_activity(sbx, started_at=at(5)) == at(30)
    assert last_activity(sbx, started_at=at(50)) == at(50)
    assert last_activity(sandbox(), started_at=None) == at(0)
