"""A master without ``[auth]`` (loopback only, everyone who reaches it is an admin) meets a web page that
reaches it through DNS rebinding: the page's requests arrive on 127.0.0.1 with the attacker's host name
in ``Host``.  A real master and real HTTP on loopback; the Host header is what a browser sends."""

from __future__ import annotations

import http.client
import json

import bcrypt
import pytest
from integration.harness import BIN, FixtureRepo, Master, free_port, settings_text, wait_for

from buildbot_kernel.master.hostguard import host_allowed, request_host

pytestmark = pytest.mark.integration
BRANCH = "drm-intel-fixes"


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    base = tmp_path_factory.mktemp("rebind")
    repo = FixtureRepo(base, (BRANCH,))
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    m = Master(base, settings_text(str(repo.bare), (BRANCH,), ports, server_extra='url = "http://buildbot.lab:8010/"\n'))
    m.start(ports["web"])
    try:
        yield m
    finally:
        m.stop()


def ask(master, method: str, path: str, host: str, body: dict | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", master.web_port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, body=data, headers={"Host": host, **({"Content-Type": "application/json"}
                                                                      if data else {})})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_a_rebound_host_name_reaches_nothing(master):
    """The hole: Buildbot looks at no Host header, so a page of rebind.example (resolving first to its
    server, then to 127.0.0.1) read the master and forced a bisect with a free-form command: without
    [auth] every caller is an admin, and for the browser those requests are same-origin."""
    port = master.web_port
    before = master.asked_for()
    for host in (f"rebind.example:{port}", "rebind.example", f"127.0.0.1.rebind.example:{port}", ""):
        status, body = ask(master, "GET", "/api/v2/builders", host)
        assert status == 421 and b"localhost" in body, (host, status, body[:200])
        status, body = ask(master, "POST", "/api/v2/forceschedulers/bisect", host,
                           {"jsonrpc": "2.0", "method": "force", "id": 1,
                            "params": {"target": BRANCH, "good": "HEAD~1", "bad": "HEAD", "command": "id"}})
        assert status == 421, (host, status, body[:200])
        assert ask(master, "GET", "/", host)[0] == 421
    assert master.asked_for() == before


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "localhost", "[::1]:{port}",
                                  "buildbot.lab:8010", "BuildBot.Lab"])
def test_the_local_names_and_the_own_url_are_answered(master, host):
    status, body = ask(master, "GET", "/api/v2/builders", host.format(port=master.web_port))
    assert status == 200 and json.loads(body)["builders"]


@pytest.mark.parametrize("header, host", [(b"localhost:8010", "localhost"), (b"[::1]:8010", "::1"),
                                          (b"LOCALHOST", "localhost"), (b"", ""), (None, ""), (b"a:b:c", "a:b:c")])
def test_request_host(header, host):
    assert request_host(header) == host


def test_host_allowed():
    own = frozenset({"buildbot.lab"})
    assert all(host_allowed(h, own) for h in ("localhost", "127.0.0.1", "127.3.4.5", "::1", "buildbot.lab"))
    assert not any(host_allowed(h, own) for h in ("", "rebind.example", "10.0.0.1", "localhost.rebind.example"))


def test_a_reconfig_that_adds_auth_gives_the_site_back_to_buildbot(master):
    """With [auth] the roles decide (a rebound page has no session: anonymous); the guard is gone."""
    (master.dir / "users.htpasswd").write_text(f"alice:{bcrypt.hashpw(b'x', bcrypt.gensalt(4)).decode()}\n")
    settings = master.dir / "settings.toml"
    settings.write_text(settings.read_text() + '\n[auth]\nhtpasswd = "users.htpasswd"\nadmins = ["alice"]\n')
    master._run(BIN / "buildbot", "reconfig", str(master.dir))
    wait_for(lambda: ask(master, "GET", "/api/v2/builders", "rebind.example")[0] == 200, 60,
             "the reconfigured master to answer every host name")
    status, _ = ask(master, "POST", "/api/v2/forceschedulers/bisect", "rebind.example",
                    {"jsonrpc": "2.0", "method": "force", "id": 1,
                     "params": {"target": BRANCH, "good": "HEAD~1", "bad": "HEAD", "command": "id"}})
    assert status in (401, 403)
