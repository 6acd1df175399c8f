"""Connection caps and a first-words deadline for any Twisted listener, counted on the transport.

The master's web UI, worker port and image server share one process and one descriptor limit: idle or
trickling connections to any of them, left open, take the other two down.  Counting happens around the
protocol the listener's factory builds (a ``ProtocolWrapper``), not in it: a web UI websocket replaces
the HTTP channel with its own protocol (autobahn sets the wrapper's ``wrappedProtocol``), so only the
wrapper is sure to hear every connection's end.

The deadline is for what a connection must say before it is trusted to be quiet: a whole HTTP request
(imagetree/httpguard.py keeps that one, per request) or a worker's login.  Whoever decides that the
connection made it calls :meth:`CountedConnection.settled`.
"""

from __future__ import annotations

from twisted.internet import protocol
from twisted.protocols import policies
from twisted.python import log

from buildbot_kernel.ratelog import RateLimitedLog

ABORT_GRACE = 5.0  # seconds a client gets to take our last words before the socket is cut
LOG_EVERY = 60.0  # seconds between two log lines about the same kind of refusal


def cancel(call) -> None:
    """Cancel a ``callLater`` call unless it is None, fired or cancelled already."""
    if call is not None and call.active():
        call.cancel()


class ConnectionCaps:
    """Open connections per client address and in all, with the refusal logged at most once a minute."""

    def __init__(self, label: str, per_address: int, total: int, clock, answer: str = ""):
        self.label = label
        self.answer = answer  # what a refused client gets, for the log line: " (503)"
        self.per_address = per_address
        self.total = total
        self.open: dict[str, int] = {}  # client address -> open connections
        self.open_total = 0
        self.throttled = RateLimitedLog(lambda line: log.msg(f"{label}: {line}"), LOG_EVERY, clock)

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``, or log the refusal and say no (a ``per_address`` of 0:
        only the total counts)."""
        if 0 < self.per_address <= self.open.get(address, 0) or self.open_total >= self.total:
            self.throttled.warning("busy", f"refused a connection from {address}{self.answer}: open connections "
                                           f"{self.open.get(address, 0)} from it, {self.open_total} in all, "
                                           f"limits {self.per_address} and {self.total}")
            return False
        self.open[address] = self.open.get(address, 0) + 1
        self.open_total += 1
        return True

    def released(self, address: str) -> None:
        self.open_total -= 1
        left = self.open.get(address, 1) - 1
        if left > 0:
            self.open[address] = left
        else:
            self.open.pop(address, None)


class Refusal(protocol.Protocol):
    """What a connection over the caps gets: ``words`` (maybe none) and the end."""

    def __init__(self, words: bytes):
        self.words = words

    def connectionMade(self):
        if self.words:
            self.transport.write(self.words)
        self.transport.loseConnection()


class CountedConnection(policies.ProtocolWrapper):
    """One counted connection; closed when it has not :meth:`settled` within its deadline."""

    address = ""
    deadline = None  # seconds to settle, or None
    _timer = None

    def connectionMade(self):
        super().connectionMade()
        if self.deadline is not None:
            self._timer = self.factory.clock.callLater(self.deadline, self._expired)

    def settled(self) -> None:
        """The connection said what it had to (a worker logged in): it may stay quiet from now on."""
        cancel(self._timer)
        self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self.factory.caps.throttled.warning("deadline", f"closed a connection from {self.address} that did "
                                                        f"not log in within {self.deadline:g} s")
        self.loseConnection()
        self._timer = self.factory.clock.callLater(ABORT_GRACE, self.abortConnection)

    def connectionLost(self, reason):
        self.settled()
        try:
            super().connectionLost(reason)
        finally:
            self.factory.caps.released(self.address)


class _Ledger(policies.WrappingFactory):
    """The ``registerProtocol``/``unregisterProtocol`` side of ProtocolWrapper, for a factory that stays
    the listener's own (its ``buildProtocol`` is replaced in place: the port already holds it)."""

    def __init__(self, inner_build, caps: ConnectionCaps, deadline, refusal: bytes, clock):
        self.inner_build = inner_build
        self.caps = caps
        self.deadline = deadline
        self.refusal = refusal
        self.clock = clock
        self.protocols = {}

    def buildProtocol(self, addr):
        address = str(getattr(addr, "host", addr))
        if not self.caps.admit(address):
            return Refusal(self.refusal)
        inner = self.inner_build(addr)
        if inner is None:
            self.caps.released(address)
            return None
        wrapper = CountedConnection(self, inner)
        wrapper.address = address
        wrapper.deadline = self.deadline
        return wrapper


def installed_ledger(factory) -> _Ledger | None:
    """The ledger :func:`limit_connections` put on ``factory``, None when it has none.  Asked of the
    factory itself: a listener made after a reconfig may reuse a freed one's ``id()``."""
    ledger = getattr(factory.__dict__.get("buildProtocol"), "__self__", None)
    return ledger if isinstance(ledger, _Ledger) else None


def limit_connections(factory, caps: ConnectionCaps, *, deadline: float | None = None, refusal: bytes = b"",
                      clock=None) -> _Ledger:
    """Make every later connection ``factory`` builds a :class:`CountedConnection` under ``caps``, with
    ``deadline`` to settle; one over the caps gets ``refusal`` and is closed.  Idempotent: the ledger
    already installed is returned."""
    ledger = installed_ledger(factory)
    if ledger is not None:
        return ledger
    if clock is None:
        from twisted.internet import reactor as clock
    ledger = _Ledger(factory.buildProtocol, caps, deadline, refusal, clock)
    factory.buildProtocol = ledger.buildProtocol
    return ledger


def settle(transport) -> bool:
    """Tell the counted connection behind ``transport`` (a protocol's ``transport``) that it made it."""
    if isinstance(transport, CountedConnection):
        transport.settled()
        return True
    return False
