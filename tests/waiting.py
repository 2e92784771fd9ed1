"""Polling with a deadline, for tests that wait on a real cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float = 60, interval: float = 0.3, what: str = "condition",
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return it; fail the test after ``timeout`` seconds,
    with what ``explain`` says of the state then, if given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}" + (f":\n{explain()}" if explain else ""))
