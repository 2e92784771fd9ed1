"""Peering settings: replicas of one pod template get distinct priorities; takeover time is a setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sandbox_operator.settings import Settings


def test_replicas_of_one_template_get_distinct_stable_priorities() -> None:
    names = [f"sandbox-operator-7d9f8c6b5-{suffix}" for suffix in ("x2k9p", "q7w4n", "m3v8r", "a1b2c")]
    priorities = [Settings(pod_name=name).peering_priority for name in names]
    assert len(set(priorities)) == len(priorities)
    assert all(0 < p < 2**31 for p in priorities)
    assert Settings(pod_name=names[0]).peering_priority == priorities[0]  # the same pod keeps its priority


def test_explicit_priority_wins_over_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_OPERATOR_PRIORITY", "0")
    monkeypatch.setenv("SANDBOX_OPERATOR_POD_NAME", "sandbox-operator-abc")
    assert Settings().peering_priority == 0
    assert Settings(pod_name="").peering_priority == 0  # outside a pod: the (default) PRIORITY


def test_peering_lifetime_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_OPERATOR_PEERING_LIFETIME", "15")
    assert Settings().peering_lifetime == 15
    with pytest.raises(ValidationError, match="peering_lifetime"):
        Settings(peering_lifetime=1)
