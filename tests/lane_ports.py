"""Ports for the servers the tests start, handed out so that two test processes never pick the same one.

The usual idiom (bind to port 0, read the port, close, let the server bind it later) leaves a window in
which the kernel hands the same port to another process's bind to port 0.  With the suite's two lanes
running at once (scripts/run-tests) that happened: the other lane's master got the same web port, one of
the two masters failed to listen (Buildbot logs that and runs on without a web UI), and its test talked
to the other lane's master until that one stopped (ConnectionResetError).

So ports come from a range below the kernel's ephemeral range (``ip_local_port_range``, which bind to
port 0 and outgoing connections draw from), each lane its own part of it (``BBK_TEST_PORTS=low-high``,
set by scripts/run-tests); inside a process a counter walks the range, so no port is handed out twice
before the range wraps, and a port that something holds (the bind test fails) is skipped.

Import it as ``lane_ports`` only (``tests/`` is on ``sys.path``): one module object, one counter.
"""

from __future__ import annotations

import os
import socket
import threading

DEFAULT_RANGE = (21000, 32699)  # below Linux's default ephemeral range (32768-60999)

_lock = threading.Lock()
_next: int | None = None


def port_range(value: str | None = None) -> tuple[int, int]:
    """``BBK_TEST_PORTS`` (``low-high``, both inclusive) or the default range."""
    value = os.environ.get("BBK_TEST_PORTS") if value is None else value
    if not value:
        return DEFAULT_RANGE
    try:
        low, high = (int(p) for p in value.split("-"))
    except ValueError:
        raise ValueError(f"BBK_TEST_PORTS is {value!r}; expected low-high, e.g. 21000-26999") from None
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"BBK_TEST_PORTS is {value!r}; expected 1024 <= low <= high <= 65535")
    return low, high


def _holdable(port: int) -> bool:
    """Nothing holds ``port`` on any address (a listener, a connection, one in TIME_WAIT)."""
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing holds now and that this process has not handed out since the range last wrapped."""
    global _next
    low, high = port_range()
    span = high - low + 1
    with _lock:
        if _next is None or not low <= _next <= high:
            _next = low + (os.getpid() * 7919) % span  # two processes sharing a range start apart
        for _ in range(span):
            port, _next = _next, low + (_next + 1 - low) % span
            if _holdable(port):
                return port
    raise RuntimeError(f"no free port in {low}-{high} (BBK_TEST_PORTS)")
