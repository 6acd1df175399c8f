"""Accounts and roles on a real master with ``[auth]``, driven over real HTTP like a hostile user would.

Users (bcrypt htpasswd written by the test): alice (admin), bob and carol (maintainers).  The branch's
fixture Makefile waits while a "hold" file exists, so a build can be kept running while others try to
stop it.  Every refusal is checked twice: the HTTP answer (401/403) and the state (no build request, the
build still running, no file written).
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
from integration.harness import BIN, FixtureRepo, Master, Worker, bisect_build, free_port, settings_text, wait_for

pytestmark = pytest.mark.integration
BRANCH = "drm-intel-fixes"
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
CANCELLED = 6
AUTH = """
[auth]
htpasswd = "users.htpasswd"
admins = ["alice"]
maintainers = ["bob", "carol"]
anonymous = "{anonymous}"
[[test]]
name = "proc"
command = "grep -q Linux /proc/version"
mode = "test"
timeout = 30
"""


class Client:
    """One browser: logs in the Buildbot way (``GET /auth/login`` with HTTP Basic), then sends the
    session cookie with every request."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None):
        self.base = f"http://127.0.0.1:{port}"
        self.cookie = None
        if user is not None:
            status, headers = self._login(user, password)
            assert status in (200, 302), f"login of {user} answered {status}"
            self.cookie = "; ".join(c.split(";", 1)[0] for c in headers.get_all("Set-Cookie") or [])
            assert self.cookie, "the login set no session cookie"

    def _login(self, user, password):
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req = urllib.request.Request(f"{self.base}/auth/login", headers={"Authorization": f"Basic {token}"})
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(req, timeout=30) as r:
                return r.status, r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.headers

    def request(self, path: str, payload: dict | None = None) -> tuple[int, object]:
        headers = {"Content-Type": "application/json"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(f"{self.base}/api/v2/{path}", data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            body = e.read()
            return e.code, json.loads(body) if body.startswith(b"{") else body

    def rpc(self, path: str, method: str, **params) -> tuple[int, object]:
        return self.request(path, {"jsonrpc": "2.0", "method": method, "id": 1, "params": params})

    def whoami(self) -> dict:
        with urllib.request.urlopen(urllib.request.Request(
                f"{self.base}/config", headers={"Cookie": self.cookie or ""}), timeout=30) as r:
            return json.load(r)["user"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def login_status(port, user, password) -> int:
    return Client(port)._login(user, password)[0]


def hold_makefile(text: str, hold) -> str:
    """The fixture Makefile, its image rule waiting while ``hold`` exists (a build to stop)."""
    rule = "\t@mkdir -p $(dir $@)\n\t@echo \"  BUILD   $(IMAGE)\""
    assert rule in text
    return text.replace(rule, f"\t@while [ -e {hold} ]; do sleep 0.1; done\n{rule}", 1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("auth")
    hold = base / "hold"
    hold.touch()  # the start-up build of the branch head waits until a test lets it go
    repo = FixtureRepo(base, (BRANCH,))
    c0 = repo.head(BRANCH)
    c1 = repo.commit_file(BRANCH, "Makefile", hold_makefile((repo.work / "Makefile").read_text(), hold),
                          "fixture: an image rule that waits while the hold file exists")
    repo.push(BRANCH)
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    settings = settings_text(str(repo.bare), (BRANCH,), ports, extra=AUTH.format(anonymous="read"), max_builds=3)
    master = Master(base, settings)
    (master.dir / "users.htpasswd").write_text("".join(
        f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(5)).decode()}\n" for u, p in PASSWORDS.items()))
    worker = Worker(base, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    worker.start()
    try:
        yield {"master": master, "port": ports["web"], "hold": hold, "shas": (c0, c1), "base": base,
               "settings": settings}
    finally:
        hold.unlink(missing_ok=True)
        worker.stop()
        master.stop()


def bisect_dirs(master) -> set:
    d = master.dir / "state" / "bisects"
    return set(d.iterdir()) if d.is_dir() else set()


def bisect_params(lab, **over) -> dict:
    c0, c1 = lab["shas"]
    return {"target": BRANCH, "good": c0, "bad": c1, "tester": "local", "test": "", "command": "",
            "mode": "test", "build_missing": False, "build_config": "x86_64", "max_steps": 0, **over}


def refused(status) -> bool:
    return status in (401, 403)


def test_logins_check_bcrypt_and_never_plain_text(lab):
    port, htpasswd = lab["port"], lab["master"].dir / "users.htpasswd"
    assert login_status(port, "alice", PASSWORDS["alice"]) in (200, 302)
    assert Client(port, "alice", PASSWORDS["alice"]).whoami()["username"] == "alice"
    assert login_status(port, "alice", "wrong") == 401
    alice_hash = htpasswd.read_text().splitlines()[0].split(":", 1)[1]
    assert login_status(port, "alice", alice_hash) == 401  # the stored hash is not a password
    assert login_status(port, "nobody", "x") == 401
    # a plain-text line (checkconfig refuses it; here it is added to the running master's file)
    accounts = htpasswd.read_text()
    htpasswd.write_text(accounts + "dave:dave-plain\n")
    try:
        assert login_status(port, "dave", "dave-plain") == 401
    finally:
        htpasswd.write_text(accounts)


def test_anonymous_reads_but_cannot_force(lab):
    master, anon = lab["master"], Client(lab["port"])
    status, body = anon.request("builders")
    assert status == 200 and {b["name"] for b in body["builders"]} >= {BRANCH, "heads", "bisect"}
    before = master.asked_for()
    for sched, params in ((f"rebuild-{BRANCH}", {"force_rebuild": True}), ("heads-now", {}),
                          ("bisect", bisect_params(lab, test="proc"))):
        status, _ = anon.rpc(f"forceschedulers/{sched}", "force", **params)
        assert refused(status), (sched, status)
    assert master.asked_for() == before


def test_anonymous_bisect_command_runs_nothing(lab):
    """The hole: an anonymous POST /api/v2/forceschedulers/bisect with a command ran it on a worker."""
    master, proof = lab["master"], lab["base"] / "proof"
    before, dirs = master.asked_for(), bisect_dirs(master)
    status, body = Client(lab["port"]).rpc("forceschedulers/bisect", "force",
                                           **bisect_params(lab, command=f"id > {proof}"))
    assert refused(status), (status, body)
    assert master.asked_for() == before and bisect_dirs(master) == dirs
    assert not proof.exists()


def test_maintainer_free_form_command_refused(lab):
    master, proof = lab["master"], lab["base"] / "bob-proof"
    bob = Client(lab["port"], "bob", PASSWORDS["bob"])
    before, dirs = master.asked_for(), bisect_dirs(master)
    for params in (bisect_params(lab, command=f"id > {proof}"),
                   bisect_params(lab, test="proc", command=f"id > {proof}"),
                   bisect_params(lab, command=[f"id > {proof}"])):
        status, body = bob.rpc("forceschedulers/bisect", "force", **params)
        assert status == 403 and "admin" in json.dumps(body), (status, body)
    assert master.asked_for() == before and bisect_dirs(master) == dirs
    assert not proof.exists()


def started_request(master, bsid) -> dict:
    build = bisect_build(master, bsid, timeout=90)
    assert "refused" not in build["state_string"], build["state_string"]
    return json.loads((master.dir / "state" / "bisects" / build["properties"]["bisect_id"][0]
                       / "request.json").read_text())


def test_maintainer_bisects_with_a_named_test(lab):
    master = lab["master"]
    bob = Client(lab["port"], "bob", PASSWORDS["bob"])
    status, body = bob.rpc("forceschedulers/bisect", "force", **bisect_params(lab, test="proc", mode="boot"))
    assert status == 200, (status, body)
    request = started_request(master, body["result"][0])
    assert (request["test"], request["command"], request["mode"], request["timeout"]) == (
        "proc", "grep -q Linux /proc/version", "test", 30)


def test_admin_may_give_a_command(lab):
    master = lab["master"]
    alice = Client(lab["port"], "alice", PASSWORDS["alice"])
    status, body = alice.rpc("forceschedulers/bisect", "force", **bisect_params(lab, command="true"))
    assert status == 200, (status, body)
    request = started_request(master, body["result"][0])
    assert (request["test"], request["command"]) == ("", "true")


def running_build(master, bsid=None):
    builds = [b for b in master.builds(BRANCH) if not b["complete"]]
    if bsid is not None:
        ids = {r["buildrequestid"] for r in master.get(f"buildrequests?buildsetid={bsid}")["buildrequests"]}
        builds = [b for b in builds if b["buildrequestid"] in ids]
    return builds[0] if builds else None


def stop(client, build) -> int:
    return client.rpc(f"builds/{build['buildid']}", "stop", reason="test")[0]


def finished(master, build) -> dict:
    return wait_for(lambda: (b := master.get(f"builds/{build['buildid']}")["builds"][0])["complete"] and b,
                    60, f"build {build['buildid']} to end")


def test_stop_is_for_admins_and_the_owner(lab):
    master, port, hold = lab["master"], lab["port"], lab["hold"]
    anon, bob = Client(port), Client(port, "bob", PASSWORDS["bob"])
    carol, alice = Client(port, "carol", PASSWORDS["carol"]), Client(port, "alice", PASSWORDS["alice"])
    try:
        # the start-up build of the head (owned by nobody): only an admin stops it
        build = wait_for(lambda: running_build(master), 120, "the start-up build of the branch head")
        assert refused(stop(anon, build)) and stop(bob, build) == 403
        assert not master.get(f"builds/{build['buildid']}")["builds"][0]["complete"]
        assert stop(alice, build) == 200
        assert finished(master, build)["results"] == CANCELLED
        # bob's own forced build: carol (also a maintainer) may not stop it, bob may
        status, body = bob.rpc(f"forceschedulers/rebuild-{BRANCH}", "force", force_rebuild=True)
        assert status == 200, (status, body)
        build = wait_for(lambda: running_build(master, body["result"][0]), 60, "bob's build to run")
        assert refused(stop(anon, build)) and stop(carol, build) == 403
        assert not master.get(f"builds/{build['buildid']}")["builds"][0]["complete"]
        assert stop(bob, build) == 200
        assert finished(master, build)["results"] == CANCELLED
    finally:
        hold.unlink(missing_ok=True)


def test_a_revision_git_reads_as_an_option_is_refused(lab):
    """The hole: the Build form's revision went to ``git checkout -f <revision>`` as typed, so a maintainer
    could give ``--pathspec-from-file=../../../buildbot.tac`` and read the worker's password (any file the
    worker can read) in the build log, which anonymous users read too."""
    master = lab["master"]
    bob = Client(lab["port"], "bob", PASSWORDS["bob"])
    before = master.asked_for()
    for rev in ("--pathspec-from-file=../../../buildbot.tac", "-b", " --orphan=x", "HEAD\n--x"):
        status, body = bob.rpc(f"forceschedulers/rebuild-{BRANCH}", "force", revision=rev)
        assert status == 400 and "revision" in json.dumps(body), (rev, status, body)
    assert master.asked_for() == before


def test_other_control_calls_are_admin_only(lab):
    master = lab["master"]
    bob = Client(lab["port"], "bob", PASSWORDS["bob"])
    build = master.builds("heads")[0]
    before = master.asked_for()
    assert bob.rpc(f"builds/{build['buildid']}", "rebuild")[0] == 403
    assert master.asked_for() == before


def page_status(client) -> int:
    req = urllib.request.Request(f"{client.base}/plugins/wsgi_dashboards/kernels/index.html",
                                 headers={"Cookie": client.cookie or ""})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def events_status(client) -> int:
    """Buildbot's server-sent events: the status, and for a stream that opened, its handshake line read."""
    req = urllib.request.Request(f"{client.base}/sse/listen/builds/*/*", headers={"Cookie": client.cookie or ""})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.readline() == b"event: handshake\n"
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_anonymous_none_hides_everything(lab):
    master = lab["master"]
    (master.dir / "settings.toml").write_text(lab["settings"].replace('anonymous = "read"', 'anonymous = "none"'))
    master._run(BIN / "buildbot", "reconfig", str(master.dir))
    try:
        anon = Client(lab["port"])
        wait_for(lambda: anon.request("builders")[0] == 403, 30, "anonymous reads to be refused")
        assert refused(anon.request("builds")[0])
        carol = Client(lab["port"], "carol", PASSWORDS["carol"])
        status, body = carol.request("builders")
        assert status == 200 and body["builders"]
        # the Kernels dashboard is a WSGI page outside Buildbot's authz: it checks the session itself
        assert page_status(anon) == 403 and page_status(carol) == 200
        forged = Client(lab["port"])
        forged.cookie = "TWISTED_SESSION=" + carol.cookie.split("=", 1)[1][:-4] + "AAAA"
        assert page_status(forged) == 403
        # and so are Buildbot's /sse streams, which check no permission themselves: every build, step and
        # forced reason went by for anyone
        assert events_status(anon) == 403 and events_status(forged) == 403 and events_status(carol) == 200
        # another application's cookie on the same host, one Python's cookie parser gives up at
        crowded = Client(lab["port"])
        crowded.cookie = 'prefs={"theme": "dark"}; ' + carol.cookie
        assert page_status(crowded) == 200 and events_status(crowded) == 200
    finally:
        (master.dir / "settings.toml").write_text(lab["settings"])
        master._run(BIN / "buildbot", "reconfig", str(master.dir))
    wait_for(lambda: events_status(Client(lab["port"])) == 200, 30, 'the streams to be open again with "read"')


def checkconfig(master_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "buildbot"), "checkconfig", str(master_dir)], env=Master.env.fget(None),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("server, password, says", [
    ('web_bind = "0.0.0.0"', "a-real-secret", "the web UI listens on 0.0.0.0 (not loopback) but there is no [auth]"),
    ('worker_bind = "0.0.0.0"', "pw", "the worker port listens on 0.0.0.0 (not loopback) and 'pw' is a published"),
    ('web_bind = "everywhere"', "a-real-secret", "[server].web_bind: expected an IP address"),
])
def test_checkconfig_refuses_an_open_listener(tmp_path, server, password, says):
    """The hole: README said bind = "0.0.0.0", which put the web UI and the worker port everywhere."""
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    text = settings_text("/nonexistent.git", (BRANCH,), ports).replace('password = "pw"', f'password = "{password}"')
    master = Master(tmp_path, text.replace("[images]", f"{server}\n[images]"))
    r = checkconfig(master.dir)
    assert r.returncode != 0 and says in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_the_session_cookie_is_found_beside_cookies_pythons_parser_gives_up_at():
    from buildbot_kernel.master.auth import session_tokens

    for header in ('prefs={"a":1}; TWISTED_SESSION=abc', "x=a b; TWISTED_SESSION=abc", "TWISTED_SESSION=abc",
                   'TWISTED_SESSION="abc"; other=1'):
        assert session_tokens(header) == ["abc"], header
    assert session_tokens("TWISTED_SESSIONX=abc; session=abc") == []
