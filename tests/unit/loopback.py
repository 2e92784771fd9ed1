"""Loopback helpers for the unit tests that talk to a server of their own (nothing leaves the machine)."""

from __future__ import annotations

import socket


def closed_loopback_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
