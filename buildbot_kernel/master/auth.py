"""``[auth]`` -> Buildbot's ``www.auth`` and ``www.authz``: who may log in, see and change what.

Roles (README.md, "Putting it on a lab network"):

* ``admin``: everything, including a bisect with a free-form ``command`` and any future control action;
* ``maintainer``: the force schedulers named in ``maintainer_schedulers`` (branch builds, "check heads
  now", a bisect with a named ``[[test]]``);
* ``owner``: stop (or cancel) the build one forced oneself;
* ``user``: any logged-in account; with ``anonymous = "none"`` only users may read.

The rules are ordered so that a control call nobody listed is refused: the last control rule is "admins
only" with ``defaultDeny``.  Refusals happen in the REST layer before the endpoint runs, so a refused
force creates no build request.  Without ``[auth]`` nothing here is configured: checkconfig then only
allows loopback listeners, and everyone who can reach them is an admin.
"""

from __future__ import annotations

from buildbot.www import auth as bbauth
from buildbot.www.authz import authz as bbauthz
from buildbot.www.authz import endpointmatchers as em
from buildbot.www.authz import roles
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, threads
from twisted.python import log
from twisted.web import resource
from twisted.web.guard import BasicCredentialFactory
from zope.interface import implementer

from buildbot_kernel import htpasswd
from buildbot_kernel.buildbot_adapter import session_secret, web_site
from buildbot_kernel.master.installer import InstallWhenReady
from buildbot_kernel.settings import Auth

SESSION_COOKIES = ("TWISTED_SESSION", "TWISTED_SECURE_SESSION")  # Buildbot's, for a site at "/"
LOG_IN = b"Log in to see this page.\n"  # what a page or stream for logged-in users says to anyone else
EVENTS = b"sse"  # Buildbot's server-sent event streams: /sse/listen/builds/*/*
EVENTS_GUARD_SERVICE = "web-events-login"
ADMIN = "admin"
MAINTAINER = "maintainer"
OWNER = "owner"
USER = "user"


# bcrypt checks running at once (in the reactor's thread pool, which the master's git commands, tree scans
# and bisect steps share), and logins waiting for one; past that a login is refused at once: a flood of
# logins from anyone who reaches the page must not starve the master's own work
LOGIN_CHECKS = 2
LOGIN_QUEUE = 32


@implementer(ICredentialsChecker)
class BcryptHtpasswdChecker:
    """Twisted cred checker over :mod:`buildbot_kernel.htpasswd`; bcrypt runs in a thread because it is
    deliberately slow and the reactor serves everyone else meanwhile, at most LOGIN_CHECKS at once."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: str):
        self.path = path
        self.slots = defer.DeferredSemaphore(LOGIN_CHECKS)

    @defer.inlineCallbacks
    def requestAvatarId(self, credentials):
        user = credentials.username
        user = user.decode("utf-8", "replace") if isinstance(user, bytes) else str(user)
        password = credentials.password
        password = password if isinstance(password, bytes) else str(password).encode()
        if len(self.slots.waiting) >= LOGIN_QUEUE:
            raise UnauthorizedLogin()
        ok = yield self.slots.run(threads.deferToThread, htpasswd.check_file, self.path, user, password)
        if not ok:
            raise UnauthorizedLogin()
        return user.encode()


class BcryptHtpasswdAuth(bbauth.TwistedICredAuthBase):
    """Buildbot's login (``GET /auth/login`` with HTTP Basic, then the session cookie) on the bcrypt
    checker.  HTTP Digest is not offered: it needs the plain password on the server."""

    def __init__(self, path: str, **kwargs):
        super().__init__([BasicCredentialFactory(b"buildbot")], [BcryptHtpasswdChecker(path)], **kwargs)


class RolesFromLogin(roles.RolesFromBase):
    """Every logged-in account is a ``user``: with ``anonymous = "none"`` that is what reading needs."""

    def getRolesFromUser(self, userDetails):
        return [USER] if userDetails.get("username") and not userDetails.get("anonymous") else []


class ForceSchedulerMatcher(em.EndpointMatcherBase):
    """Forcing one of the named schedulers (names, not builders: a new scheduler is admin-only until it
    is listed)."""

    def __init__(self, schedulers, **kwargs):
        self.schedulers = frozenset(schedulers)
        super().__init__(**kwargs)

    def match_ForceSchedulerEndpoint_force(self, epobject, epdict, options):
        if epdict.get("schedulername") in self.schedulers:
            return defer.succeed(em.Match(self.master))
        return defer.succeed(None)


class FreeFormCommandMatcher(em.EndpointMatcherBase):
    """Forcing ``scheduler`` with a non-empty ``command`` argument: a shell command of the caller's
    choosing, which runs on a build worker."""

    def __init__(self, scheduler: str, field: str = "command", **kwargs):
        self.scheduler = scheduler
        self.field = field
        super().__init__(**kwargs)

    def match_ForceSchedulerEndpoint_force(self, epobject, epdict, options):
        value = (options or {}).get(self.field)
        if epdict.get("schedulername") == self.scheduler and has_command(value):
            return defer.succeed(em.Match(self.master))
        return defer.succeed(None)


def has_command(value) -> bool:
    """A form value that asks for a command: anything but empty (lists are how forms send some fields)."""
    if isinstance(value, (list, tuple)):
        return any(has_command(v) for v in value)
    return value is not None and str(value).strip() != ""


def authz_rules(anonymous: str, maintainer_schedulers, command_scheduler: str) -> list:
    """The ordered allow rules; see the module docstring."""
    rules = [
        FreeFormCommandMatcher(command_scheduler, role=ADMIN),
        ForceSchedulerMatcher(maintainer_schedulers, role=MAINTAINER, defaultDeny=False),
        em.StopBuildEndpointMatcher(role=OWNER, defaultDeny=False),
        em.AnyControlEndpointMatcher(role=ADMIN),
    ]
    if anonymous == "none":
        rules.append(em.AnyEndpointMatcher(role=USER))
    return rules


def www_auth(auth: Auth | None, htpasswd_path: str | None, maintainer_schedulers, command_scheduler: str
             ) -> dict:
    """The ``www`` config entries for ``[auth]`` (``auth``, ``authz``); empty without ``[auth]``."""
    if auth is None:
        return {}
    role_matchers = [
        roles.RolesFromUsername(roles=[ADMIN, MAINTAINER], usernames=list(auth.admins)),
        roles.RolesFromUsername(roles=[MAINTAINER], usernames=list(auth.maintainers)),
        roles.RolesFromOwner(role=OWNER),
        RolesFromLogin(),
    ]
    return {
        "auth": BcryptHtpasswdAuth(htpasswd_path),
        "authz": bbauthz.Authz(allowRules=authz_rules(auth.anonymous, maintainer_schedulers,
                                                      command_scheduler),
                               roleMatchers=role_matchers),
    }


def may_run_command(auth: Auth | None, owner) -> bool:
    """The bisect start step's own check of a free-form command (the REST layer checked it already;
    this holds for any other way a build request gets made)."""
    return auth is None or (isinstance(owner, str) and owner in auth.admins)


def session_tokens(cookie_header: str) -> list[str]:
    """The values of Buildbot's session cookies in a ``Cookie`` header, read the way Twisted reads a
    cookie for Buildbot (``name=value`` pairs split at ``;``).  Not :class:`http.cookies.SimpleCookie`:
    it stops, without a word, at the first cookie it cannot parse (another application's JSON value on
    the same host), and a logged-in user was then refused."""
    out = []
    for part in cookie_header.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name in SESSION_COOKIES:
            out.append(value.strip().strip('"'))
    return out


def logged_in(environ: dict, master) -> bool:
    """For pages Buildbot's authz does not cover (the WSGI dashboards, ``/sse``): does the request carry a
    valid Buildbot session of a logged-in user?  Checked with the master's own session secret."""
    secret = session_secret(master)
    if not secret:
        return False
    for token in session_tokens(environ.get("HTTP_COOKIE", "")):
        try:
            info = bbauth.parse_user_info_from_token(token, secret)
        except KeyError:  # expired, forged or malformed
            continue
        if isinstance(info, dict) and info.get("username") and not info.get("anonymous"):
            return True
    return False


class LoginRequired:
    """A WSGI dashboard for logged-in users only (``anonymous = "none"``).  buildbot-wsgi-dashboards sets
    ``buildbot_api`` on the app it is given; it is passed on to the wrapped app."""

    def __init__(self, app):
        self.app = app

    @property
    def buildbot_api(self):
        return getattr(self.app, "buildbot_api", None)

    @buildbot_api.setter
    def buildbot_api(self, api):
        self.app.buildbot_api = api

    def __call__(self, environ, start_response):
        if not logged_in(environ, getattr(self.buildbot_api, "master", None)):
            start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(LOG_IN)))])
            return [LOG_IN]
        return self.app(environ, start_response)


class EventsLoginRequired(resource.Resource):
    """Buildbot's ``/sse`` streams for logged-in users only.  Buildbot checks no permission there (its
    ``/ws`` asks authz; ``/sse`` does not), so with ``anonymous = "none"`` anyone could still watch every
    build, step and forced reason go by."""

    isLeaf = True  # as Buildbot's EventResource: the rest of the path is its postpath

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def render(self, request):
        cookie = (request.getHeader(b"cookie") or b"").decode("latin-1")
        if not logged_in({"HTTP_COOKIE": cookie}, getattr(request.site, "master", None)):
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return LOG_IN
        return self.inner.render(request)


class EventsGuard(InstallWhenReady):
    """Puts :class:`EventsLoginRequired` in front of ``/sse`` (``anonymous = "none"``)."""

    name = EVENTS_GUARD_SERVICE

    def install(self) -> bool:
        site = web_site(self.master)
        if site is None:
            return False  # not made yet: the next turn
        events = site.resource.children.get(EVENTS)
        if events is not None and not isinstance(events, EventsLoginRequired):
            site.resource.putChild(EVENTS, EventsLoginRequired(events))
            log.msg('web UI: anonymous = "none": /sse event streams only for logged-in users')
        return True

    def stopService(self):
        """At a reconfig back to ``anonymous = "read"``: Buildbot's own streams again."""
        site = web_site(self.master)
        events = site.resource.children.get(EVENTS) if site is not None else None
        if isinstance(events, EventsLoginRequired):
            site.resource.putChild(EVENTS, events.inner)
        return super().stopService()
