"""Loopback ports handed to the processes the tests start are distinct (localcluster.ports)."""

from __future__ import annotations

import socket

from localcluster.ports import free_port, free_ports


def test_ports_handed_out_are_distinct_within_a_call_and_across_calls_and_bindable() -> None:
    """An operator's metrics and health ports were once the same port (each probe socket closed before the next was
    opened, and the kernel gave the port again): its health endpoint then failed to bind."""
    given = free_ports(20) + [free_port() for _ in range(20)]
    assert len(set(given)) == len(given)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", given[-1]))
