"""Loopback ports for the processes the local cluster, the tests and the benches start."""

from __future__ import annotations

import socket
from contextlib import ExitStack

# Every port handed out by this process: the kernel may give a port again once its probe socket is closed, and two
# of ours (an operator's metrics and health ports, say) must never be the same one.
_GIVEN: set[int] = set()


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free now, none handed out before by this process. Another process may still
    take one before it is bound: a caller that fails to bind should pick again."""
    ports: list[int] = []
    with ExitStack() as stack:
        while len(ports) < count:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in _GIVEN:  # a port given before stays bound below until the end: the next bind differs
                ports.append(port)
        _GIVEN.update(ports)
    return ports


def free_port() -> int:
    """One loopback port, as ``free_ports``."""
    return free_ports(1)[0]
