"""Connection limits of the embedded image server, so slow or numerous clients cannot take the master's
file descriptors (and with them the web UI and the worker port, which live in the same process).

- A deadline for the whole request (request line, headers and any body): ``HEAD_TIMEOUT`` seconds from
  the moment the connection opens, or from the end of the previous response on a kept-alive connection.
  Sending a byte does not extend it (Twisted's own idle timeout restarts on every byte, which a client
  trickling one header byte a minute keeps alive forever).  Past it a client that sent part of a request
  gets ``408`` and the connection is closed; an idle kept-alive connection is just closed.
- A download whose client reads nothing for ``STALL_TIMEOUT`` seconds is cut off (imagetree/server.py's
  FileProducer asks the site for it).
- At most ``PER_ADDRESS_LIMIT`` open connections per client address and ``TOTAL_LIMIT`` in all; one
  more gets ``503`` and is closed at once, before anything it sent is read.
- A request body larger than the ``max_body`` of what it is for (the tree's root takes none; the farm's
  ``/machines`` takes reports) is refused with ``413`` as soon as its headers say so, before it is read:
  Twisted would otherwise spool any body to a temporary file until the request deadline.

Refusals are logged at most once a minute per kind, with a count, so a flood does not flood the log.
README.md, "Images", states the limits for admins.  The access log never holds a machine key: a ``key``
query field (README "Machine keys" allows it besides the header) is written as ``key=<redacted>``.
"""

from __future__ import annotations

import io
from urllib.parse import unquote_plus

from twisted.python import log
from twisted.web import http, server

from buildbot_kernel.connlimits import ABORT_GRACE, ConnectionCaps, Refusal, cancel
from buildbot_kernel.ratelog import RateLimitedLog

HEAD_TIMEOUT = 10.0  # seconds for a whole request to arrive
STALL_TIMEOUT = 60.0  # seconds a download may go without the client taking a byte
PER_ADDRESS_LIMIT = 64  # open connections from one client address
TOTAL_LIMIT = 512  # open connections in all (well below a 1024 descriptor limit)
QUIET_EVERY = 600.0  # seconds between two access log lines of one quiet cause (a machine's idle polls)
SECRET_FIELDS = ("key",)  # query fields whose values the access log leaves out



def _response(status: bytes, body: bytes, *extra: bytes) -> bytes:
    """A whole response written straight to the transport (no Request exists for these)."""
    head = [b"HTTP/1.1 " + status, b"Connection: close", *extra, b"Content-Type: text/plain; charset=utf-8",
            b"Content-Length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_TIMEOUT_RESPONSE = _response(b"408 Request Timeout", b"408 the request did not arrive in time\n")
BUSY_RESPONSE = _response(b"503 Service Unavailable", b"503 too many connections; try again later\n",
                           b"Retry-After: 10")


class GuardedChannel(http.HTTPChannel):
    """An HTTPChannel with a request deadline that bytes do not extend; tells its site when it closes.

    Its site has ``throttled`` (a RateLimitedLog); the web UI's site counts connections on the transport
    (connlimits.py) instead of here, and its channel only keeps the deadline."""

    head_timeout = HEAD_TIMEOUT
    address = None  # the client address this connection counts against, set by GuardedSite
    _deadline = None
    _heard = False  # bytes of a request arrived since the deadline was armed

    def connectionMade(self):
        super().connectionMade()
        self._arm()

    def dataReceived(self, data):
        self._heard = True
        super().dataReceived(data)

    def allContentReceived(self):
        self._disarm()  # the request is in: rendering and sending are not bound by the deadline
        super().allContentReceived()

    def requestDone(self, request):
        if self.persistent:  # armed before the parent parses a pipelined request, which disarms it
            self._arm()
        super().requestDone(request)

    def connectionLost(self, reason):
        self._disarm()
        super().connectionLost(reason)
        address, self.address = self.address, None
        if address is not None and isinstance(getattr(self, "site", None), GuardedSite):
            self.site.released(address)

    def _arm(self) -> None:
        self._disarm()
        self._heard = False
        self._deadline = self.callLater(self.head_timeout, self._expired)

    def _disarm(self) -> None:
        cancel(self._deadline)
        self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._heard or self.requests:
            self.site.throttled.warning("deadline", f"closed a connection from {self.peer()} that did not send a "
                                                 f"whole request within {self.head_timeout:g} s (408)")
            self.transport.write(_TIMEOUT_RESPONSE)
        self.loseConnection()
        self._abortingCall = self.callLater(ABORT_GRACE, self._abort)

    def peer(self) -> str:
        """The client's address for a log line (set by a GuardedSite; Buildbot's site sets none)."""
        if self.address is not None:
            return self.address
        return str(getattr(self.transport.getPeer(), "host", "?")) if self.transport is not None else "?"

    def _abort(self) -> None:
        self._abortingCall = None  # fired: connectionLost must not cancel it
        self.transport.abortConnection()


def redacted_uri(uri: bytes, fields=SECRET_FIELDS) -> bytes:
    """``uri`` with the value of every query field in ``fields`` replaced by ``<redacted>``.  Field names
    are compared decoded (``%6Bey=`` is the ``key`` field to Twisted's argument parser too)."""
    path, sep, query = uri.partition(b"?")
    if not sep:
        return uri
    parts = []
    for part in query.split(b"&"):
        name, eq, _ = part.partition(b"=")
        secret = unquote_plus(name.decode("latin-1")) in fields
        parts.append(name + b"=<redacted>" if secret and eq else part)
    return path + sep + b"&".join(parts)


class _LoggedRequest:
    """What the access log formatter reads of a request: the request itself, with a redacted ``uri``."""

    def __init__(self, request):
        self._request = request
        self.uri = redacted_uri(request.uri)

    def __getattr__(self, name):
        return getattr(self._request, name)


def redacting_log_formatter(timestamp, request) -> str:
    """Twisted's combined log format, without secrets in the request line."""
    return http.combinedLogFormatter(timestamp, _LoggedRequest(request))


class GuardedSite(server.Site):
    """A Site whose connections are GuardedChannels, counted per client address."""

    protocol = GuardedChannel  # plain HTTP/1.1; no TLS here, so no HTTP/2 negotiation to keep

    def __init__(self, resource, *, head_timeout: float = HEAD_TIMEOUT, per_address: int = PER_ADDRESS_LIMIT,
                 total: int = TOTAL_LIMIT, stall_timeout: float = STALL_TIMEOUT, **kwargs):
        kwargs.setdefault("logFormatter", redacting_log_formatter)
        super().__init__(resource, **kwargs)
        self.head_timeout = head_timeout
        self.stall_timeout = stall_timeout
        self.per_address = per_address
        self.total = total
        self.caps = ConnectionCaps("image server", per_address, total, self.reactor.seconds, " (503)")
        self.throttled = self.caps.throttled
        self.quiet = RateLimitedLog(lambda line: log.msg(f"image server: {line}"), QUIET_EVERY, self.reactor.seconds)
        install_body_limit(self)  # the root's max_body (and a mounted child's) bounds what a request may send

    def log(self, request) -> None:
        """The access log, except that requests a resource marked with a ``log_cause`` (a test machine's
        idle poll, every few seconds) get one line per cause and :data:`QUIET_EVERY` seconds."""
        cause = getattr(request, "log_cause", None)
        if cause is None:
            return super().log(request)
        left_out = self.quiet.admit(cause)
        if left_out is None:
            return None
        if left_out:
            self.quiet.emit(f"{left_out} requests ({cause}) not logged in the last {QUIET_EVERY:.0f}s")
        return super().log(request)

    def buildProtocol(self, addr):
        address = str(getattr(addr, "host", addr))
        if not self.caps.admit(address):
            return Refusal(BUSY_RESPONSE)
        channel = super().buildProtocol(addr)
        channel.head_timeout = self.head_timeout
        channel.address = address
        return channel

    def released(self, address: str) -> None:
        self.caps.released(address)


class BodyLimit:
    """Mixin for a ``twisted.web.server.Request`` class: refuses a body larger than the ``max_body`` of
    the top-level resource the request is for (a mounted child that sets one, else the site's root, else
    the site itself: the web UI's root is Buildbot's, or a wrapper that may come and go), as
    soon as the headers say so (or, without a Content-Length, as soon as the body grows past it): 413 and
    the connection closed, nothing buffered.

    Twisted reads a whole body into memory (or a temporary file) before any resource sees the request,
    so the check cannot live in the resource itself.
    """

    _bbk_limit = None
    _bbk_seen = 0
    _bbk_refused = False

    def _bbk_target(self):
        path = getattr(self.channel, "_path", b"") or b""
        first = path.split(b"?", 1)[0].lstrip(b"/").split(b"/", 1)[0]
        root = getattr(getattr(self.channel, "site", None), "resource", None)
        child = getattr(root, "children", {}).get(first)
        return child if hasattr(child, "max_body") else root

    def gotLength(self, length):
        target = self._bbk_target()
        self._bbk_limit = getattr(target, "max_body", getattr(getattr(self.channel, "site", None), "max_body", None))
        if self._bbk_limit is not None and length is not None and length > self._bbk_limit:
            self._bbk_refuse(target, length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._bbk_refused:
            return
        self._bbk_seen += len(data)
        if self._bbk_limit is not None and self._bbk_seen > self._bbk_limit:
            self._bbk_refuse(self._bbk_target(), None)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._bbk_refused:
            return
        super().requestReceived(command, path, version)

    def _bbk_refuse(self, target, length):
        self._bbk_refused = True
        self.content = io.BytesIO()
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the refusal
        body = f"request body larger than {self._bbk_limit} bytes\n".encode()
        self.channel.transport.write(b"HTTP/1.1 413 Content Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                     b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.channel.loseConnection()
        if hasattr(target, "body_refused"):
            target.body_refused(self, length)


def install_body_limit(site) -> None:
    """Make ``site``'s requests honour the ``max_body`` of its root and of the resources mounted on it
    (idempotent; keeps whatever request class the site already uses)."""
    factory = site.requestFactory
    if not isinstance(factory, type):
        raise TypeError(f"cannot limit request bodies: the site's request factory {factory!r} is not a class")
    if not issubclass(factory, BodyLimit):
        site.requestFactory = type(f"BodyLimited{factory.__name__}", (BodyLimit, factory), {})
