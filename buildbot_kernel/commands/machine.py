"""``buildbot-kernel machine repair NAME``: tell a running master that a broken test machine works again.

It does what the web UI's "Repair a test machine" button does, over Buildbot's REST API: log in the
Buildbot way (``GET /auth/login`` with HTTP Basic credentials, then the session cookie), force the
``repair-machine`` scheduler with ``machine=NAME``, and wait for that build to say what it did.  Only
admins may (the master's ``www.authz``).  Without ``--user`` no login is attempted (a master without
``[auth]`` on loopback).  The master must be running: the machine state lives in it.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import time
import urllib.error
import urllib.parse
import urllib.request

from buildbot_kernel.errors import BuildbotKernelError

WAIT_SECONDS = 120


class RestError(BuildbotKernelError):
    pass


class RestClient:
    """Buildbot's REST API with a session cookie (what the web UI holds after logging in)."""

    def __init__(self, master_url: str, timeout: float = 30):
        parts = urllib.parse.urlsplit(master_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RestError(f"--master: expected the web UI's http(s) URL, e.g. http://localhost:8010/, "
                            f"got {master_url!r}")
        self.base = master_url.rstrip("/") + "/"
        self.timeout = timeout
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def _open(self, req):
        try:
            with self.opener.open(req, timeout=self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise RestError(f"cannot reach the master at {self.base}: {getattr(e, 'reason', e)}") from None

    def login(self, user: str, password: str) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        code, body = self._open(urllib.request.Request(self.base + "auth/login",
                                                       headers={"Authorization": f"Basic {token}"}))
        if code >= 400:
            raise RestError(f"login as {user!r} refused by the master (HTTP {code}): check the user and "
                            "the password file, and that the master has [auth]")

    def get(self, path: str) -> dict:
        code, body = self._open(urllib.request.Request(self.base + "api/v2/" + path))
        if code != 200:
            raise RestError(f"GET api/v2/{path}: HTTP {code}: {body[:300].decode('utf-8', 'replace')}")
        return json.loads(body)

    def force(self, scheduler: str, params: dict) -> int:
        """The buildset id of a forced build; a refusal says why."""
        data = json.dumps({"jsonrpc": "2.0", "method": "force", "id": 1, "params": params}).encode()
        req = urllib.request.Request(self.base + f"api/v2/forceschedulers/{scheduler}", data=data,
                                     headers={"Content-Type": "application/json"})
        code, body = self._open(req)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {}
        if code in (401, 403):
            raise RestError(f"the master refused to force {scheduler} (HTTP {code}): an admin login is needed "
                            "(--user, --password-file)")
        if code != 200 or "error" in answer:
            why = answer.get("error", {}).get("message") if isinstance(answer.get("error"), dict) else None
            raise RestError(f"forcing {scheduler} failed (HTTP {code}): "
                            f"{why or body[:300].decode('utf-8', 'replace')}")
        return answer["result"][0]


def wait_for_build(client: RestClient, bsid: int, seconds: float = WAIT_SECONDS) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reqs = client.get(f"buildrequests?buildsetid={bsid}")["buildrequests"]
        if reqs and reqs[0]["complete"]:
            builds = client.get(f"builds?buildrequestid={reqs[0]['buildrequestid']}")["builds"]
            if builds and builds[-1]["complete"]:
                return builds[-1]
        time.sleep(0.5)
    raise RestError(f"the repair build (buildset {bsid}) did not finish within {seconds:.0f}s; see the "
                    "'machines' builder in the web UI")


def repair(args) -> int:
    from buildbot_kernel.cli import CommandError
    from buildbot_kernel.master.machines_config import REPAIR_SCHEDULER

    try:
        client = RestClient(args.master)
        if args.user:
            if not args.password_file:
                raise RestError("--user needs --password-file (a file holding the password)")
            try:
                with open(args.password_file) as f:
                    password = f.readline().rstrip("\r\n")
            except OSError as e:
                raise RestError(f"--password-file {args.password_file}: {e.strerror}") from None
            client.login(args.user, password)
        bsid = client.force(REPAIR_SCHEDULER, {"machine": args.name, "reason": args.reason})
        build = wait_for_build(client, bsid)
    except RestError as e:
        raise CommandError(str(e)) from None
    try:  # the repair step says what it did ("repaired skl-1 (was broken (...))")
        steps = client.get(f"builds/{build['buildid']}/steps")["steps"]
    except RestError:
        steps = []
    said = [s["state_string"] for s in steps if s.get("name") == "repair" and s.get("state_string")]
    print(said[-1] if said else build.get("state_string") or f"build {build.get('number')} finished")
    return 0 if build.get("results") == 0 else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("machine", help="administer test machines on a running master",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    r = sub.add_parser("repair", help="mark a broken test machine as working again (admins)",
                       description=__doc__.split("\n\n")[1])
    r.add_argument("name", help="the [[machine]] name")
    r.add_argument("--master", default="http://localhost:8010/", help="the web UI's URL (default %(default)s)")
    r.add_argument("--user", help="an admin account of the master's [auth]")
    r.add_argument("--password-file", help="a file whose first line is the password")
    r.add_argument("--reason", default="repaired from the command line", help="what was fixed")
    r.set_defaults(func=repair)
