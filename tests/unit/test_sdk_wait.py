"""What a wait that runs out says: whether the watch brought nothing, the Sandbox has no status (no operator serves
its namespace), or it is there and not Ready yet (its condition's reason)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from sandbox_operator.sdk.client import SandboxClient
from sandbox_operator.sdk.errors import WaitTimeoutError


def _client(events: list[tuple[str, dict[str, Any]]]) -> SandboxClient:
    client = SandboxClient.__new__(SandboxClient)  # no API: only _wait runs, on these events

    async def replay(*_: Any) -> AsyncGenerator[tuple[str, dict[str, Any]]]:
        for event in events:
            yield event

    client._events = replay  # type: ignore[method-assign]
    return client


def _timeout(events: list[tuple[str, dict[str, Any]]]) -> WaitTimeoutError:
    with pytest.raises(WaitTimeoutError) as raised:
        asyncio.run(_client(events)._wait("box", "team", 5))
    return raised.value


def test_a_watch_that_brought_no_event_says_so() -> None:
    error = _timeout([])
    assert "not ready within 5s; the watch of sandboxes in team brought no event of it" in str(error)
    assert error.phase is None


def test_a_sandbox_without_status_points_at_the_operator() -> None:
    error = _timeout([("ADDED", {"metadata": {"name": "box"}})])
    assert "no status was written in that time: is an operator serving namespace team?" in str(error)


def test_a_pending_sandbox_gives_its_condition_and_blames_nobody() -> None:
    pending = {"metadata": {"name": "box"}, "status": {"phase": "Pending", "conditions": [
        {"type": "Ready", "status": "False", "reason": "PodPending", "message": "pod sbx-box is pending"}]}}
    error = _timeout([("ADDED", pending), ("ERROR", {})])
    assert str(error) == ("sandbox box was not ready within 5s (phase Pending, reason PodPending): "
                          "pod sbx-box is pending")
