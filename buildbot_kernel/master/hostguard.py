"""The web UI without ``[auth]`` answers only requests addressed to this host by a local name.

Without ``[auth]`` the web UI listens on loopback only (checkconfig) and everyone who reaches it is an
admin, free-form bisect commands included.  A web page in a browser on the same host reaches it too,
through DNS rebinding: ``http://rebind.example:8010/`` first resolves to the attacker's server, then to
127.0.0.1, and the page's requests (same-origin for the browser, so no CORS preflight) arrive at the
master with ``Host: rebind.example:8010``.  Buildbot looks at no Host header, so this service wraps its
site's root resource: a request whose Host is not a loopback address, ``localhost``, or the host of
``[server].url`` is answered ``421`` and reaches nothing (README "Putting it on a lab network").
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from twisted.python import log
from twisted.web import resource

from buildbot_kernel.buildbot_adapter import web_site
from buildbot_kernel.master.installer import InstallWhenReady

HOST_GUARD_SERVICE = "web-host-guard"
LOCAL_NAMES = ("localhost", "localhost.localdomain")
REFUSED = b"421 this web UI has no [auth]: it answers requests for localhost and its own url only\n"


def request_host(value: bytes | None) -> str:
    """The host name of a Host header (no port, no brackets, lower case), "" when there is none."""
    text = (value or b"").decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else ""
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def host_allowed(host: str, own: frozenset[str]) -> bool:
    """A loopback address, a local name, or one of ``own`` (the host of ``[server].url``)."""
    if not host:
        return False
    if host in LOCAL_NAMES or host in own:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Refused(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(421)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return REFUSED


class HostGuard(resource.Resource):
    """Delegates to ``inner`` (Buildbot's root resource) when the request's Host is allowed."""

    def __init__(self, inner, own: frozenset[str]):
        super().__init__()
        self.inner = inner
        self.own = own

    def _allowed(self, request) -> bool:
        return host_allowed(request_host(request.getHeader(b"host")), self.own)

    def getChildWithDefault(self, name, request):
        if not self._allowed(request):
            return _Refused()
        return self.inner.getChildWithDefault(name, request)

    def render(self, request):
        if not self._allowed(request):
            return _Refused().render(request)
        return self.inner.render(request)


class WebHostGuard(InstallWhenReady):
    """Puts :class:`HostGuard` in front of the web UI's site once Buildbot made it (the configured
    services are set up before the web service makes its site at the first start)."""

    name = HOST_GUARD_SERVICE

    def checkConfig(self, url: str = "", **kwargs):
        super().checkConfig(**kwargs)

    def reconfigService(self, url: str = "", **kwargs):
        host = (urlsplit(url).hostname or "").lower()
        self.own = frozenset([host] if host else [])
        site = web_site(self.master)
        if isinstance(getattr(site, "resource", None), HostGuard):
            site.resource.own = self.own
        return super().reconfigService(**kwargs)

    def install(self) -> bool:
        site = web_site(self.master)
        if site is None:
            return False  # not made yet: the next turn
        if not isinstance(site.resource, HostGuard):
            site.resource = HostGuard(site.resource, getattr(self, "own", frozenset()))
            log.msg("web UI: no [auth], so only requests for localhost or its own url are answered")
        return True

    def stopService(self):
        """Also at a reconfig that adds ``[auth]``: the site is Buildbot's own again."""
        site = web_site(self.master)
        if isinstance(getattr(site, "resource", None), HostGuard):
            site.resource = site.resource.inner
        return super().stopService()
