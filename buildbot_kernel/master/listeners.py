"""Limits on Buildbot's own listeners, the web UI and the worker (PB) port, like the image server's.

All three share the master's descriptors: a thousand trickling or silent connections to either Buildbot
port took the other two down (Buildbot bounds neither a request body, nor a connection's silence before
a login, nor how many connections there are).  README.md "Images" and "Putting it on a lab network"
state the limits for admins.

- Web UI: a request body of at most ``WEB_MAX_BODY`` bytes (413 past it, before it is read: a force form
  or a JSON-RPC call is a few KiB); the image server's request deadline (a kept-alive or new connection
  sends a whole request within ``HEAD_TIMEOUT`` seconds, a byte does not extend it); at most
  ``WEB_PER_ADDRESS`` connections per client address and ``WEB_TOTAL`` in all (503 past them).  A
  websocket or an event stream is past its request, so no deadline cuts it; it counts until it closes.
- Worker port: a connection logs in within ``LOGIN_TIMEOUT`` seconds or is closed (a logged-in worker
  may stay silent for its keepalive interval); at most ``WORKER_PER_ADDRESS`` per address and
  ``WORKER_TOTAL`` in all (closed at once past them).
"""

from __future__ import annotations

from twisted.python import log

from buildbot_kernel.buildbot_adapter import on_worker_login, web_site, worker_listeners
from buildbot_kernel.connlimits import ConnectionCaps, installed_ledger, limit_connections, settle
from buildbot_kernel.imagetree.httpguard import BUSY_RESPONSE, GuardedChannel, install_body_limit
from buildbot_kernel.master.installer import InstallWhenReady

LISTENER_GUARD_SERVICE = "listener-guard"
WEB_MAX_BODY = 256 * 1024  # bytes of a request body to the web UI
WEB_PER_ADDRESS = 64  # open web UI connections from one client address (a browser: one websocket per tab + 6)
WEB_TOTAL = 256  # open web UI connections in all
LOGIN_TIMEOUT = 30.0  # seconds a worker port connection has to log in
WORKER_PER_ADDRESS = 16  # open worker port connections from one address (a few workers behind one NAT)
WORKER_TOTAL = 128  # open worker port connections in all
WATCH_EVERY = 1.0  # seconds between two looks for a new worker port (a reconfig that moved it)


def guard_web_site(site, caps: ConnectionCaps, max_body: int) -> None:
    """The image server's request deadline and body limit on ``site`` (Buildbot's), its connections
    counted on the transport under ``caps`` (idempotent)."""
    site.protocol = GuardedChannel  # plain HTTP/1.1, as Buildbot's port is (no TLS, so no HTTP/2)
    site.throttled = caps.throttled
    site.max_body = max_body
    install_body_limit(site)
    limit_connections(site, caps, refusal=BUSY_RESPONSE, clock=getattr(site, "reactor", None))


class ListenerGuard(InstallWhenReady):
    name = LISTENER_GUARD_SERVICE
    watch_every = WATCH_EVERY

    def checkConfig(self, web_max_body: int = WEB_MAX_BODY, web_per_address: int = WEB_PER_ADDRESS,
                    web_total: int = WEB_TOTAL, login_timeout: float = LOGIN_TIMEOUT,
                    worker_per_address: int = WORKER_PER_ADDRESS, worker_total: int = WORKER_TOTAL, **kwargs):
        super().checkConfig(**kwargs)

    def reconfigService(self, web_max_body: int = WEB_MAX_BODY, web_per_address: int = WEB_PER_ADDRESS,
                        web_total: int = WEB_TOTAL, login_timeout: float = LOGIN_TIMEOUT,
                        worker_per_address: int = WORKER_PER_ADDRESS, worker_total: int = WORKER_TOTAL, **kwargs):
        if not hasattr(self, "web_caps"):
            clock = self.master.reactor.seconds
            self.web_caps = ConnectionCaps("web UI", web_per_address, web_total, clock, " (503)")
            self.worker_caps = ConnectionCaps("worker port", worker_per_address, worker_total, clock)
        self.web_caps.per_address, self.web_caps.total = web_per_address, web_total
        self.worker_caps.per_address, self.worker_caps.total = worker_per_address, worker_total
        self.web_max_body = web_max_body
        self.login_timeout = login_timeout
        self._told: set[str] = set()  # what the log said under these values
        return super().reconfigService(**kwargs)

    def install(self) -> bool:
        """Guard what exists; True once the web site and a worker port do."""
        site = web_site(self.master)
        if site is not None:
            if installed_ledger(site) is None or site.max_body != self.web_max_body:
                guard_web_site(site, self.web_caps, self.web_max_body)
            self._say("web", f"web UI: request bodies up to {self.web_max_body} bytes, {self.web_caps.per_address} "
                             f"connections per address and {self.web_caps.total} in all")
        listeners = worker_listeners(self.master)
        for factory in listeners:
            if installed_ledger(factory) is None:  # a new worker port (the first, or one a reconfig moved)
                self._told.discard("worker")
            # also a ledger an earlier configuration installed: the deadline is this configuration's
            limit_connections(factory, self.worker_caps, clock=self.master.reactor).deadline = self.login_timeout
            self._say("worker", f"worker port: log in within {self.login_timeout:g} s, "
                                f"{self.worker_caps.per_address} connections per address and "
                                f"{self.worker_caps.total} in all")
        on_worker_login(self.master, settle)
        return site is not None and bool(listeners)

    def _say(self, what: str, line: str) -> None:
        if what not in self._told:
            self._told.add(what)
            log.msg(line)
