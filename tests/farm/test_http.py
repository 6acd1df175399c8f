"""The /machines resource over real HTTP on 127.0.0.1 (no VM): what stage 1 and stage 2 see.

The refusals (no key, wrong key, forged reports, oversized bodies) are tests/security/test_machine_keys.py.
"""

import json

import pytest

from buildbot_kernel.farm import instructions as ins
from buildbot_kernel.farm.registry import Registry
from buildbot_kernel.farm.testing import FarmServer
from buildbot_kernel.farm.testing import http_get as get
from buildbot_kernel.farm.testing import http_post as post
from buildbot_kernel.settings import Machine

SHA = "ab" * 32
KEY = "m1-key-for-the-http-tests"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http")
    (tmp / "initrd").write_bytes(b"local os")
    reg = Registry(["m1"], tmp / "state.json", keys={"m1": KEY})
    s = FarmServer(tmp, reg, poll={"m1": 3}, initrds={"m1": str(tmp / "initrd")})
    s.start()
    yield s
    s.stop()


def test_nothing_assigned_says_wait(srv):
    assert post(f"{srv.url}/machines/m1/boot", {}, key=KEY) == (200, "WAIT=3\n")
    assert get(f"{srv.url}/machines/m1/boot", key=KEY) == (200, "WAIT=3\n")


def test_one_step_over_http(srv):
    a = ins.make_assignment(Machine(name="m1"), {"name": "6.1-x", "url": "http://h/i/",
                                             "files": {"vmlinuz": {"sha256": SHA}}},
                            "echo from server", "test", srv.url)
    srv.registry.assign(a)
    code, body = get(f"{srv.url}/machines/m1/boot", key=KEY)  # a look changes nothing
    assert code == 200 and ins.parse(body)["TOKEN"] == a.token
    assert srv.registry.assignment("m1").phase == "assigned"
    code, body = post(f"{srv.url}/machines/m1/boot", {}, key=KEY)  # the machine asks
    assert code == 200 and ins.parse(body)["TOKEN"] == a.token and ins.parse(body)["KERNEL_SHA256"] == SHA
    assert srv.registry.assignment("m1").phase == "fetched"
    assert "bbk.key" not in body and KEY not in body  # stage 1 adds the key itself
    assert get(f"{srv.url}/machines/m1/test?token={a.token}", key=KEY) == (200, "echo from server\n")
    assert get(f"{srv.url}/machines/m1/test?token=nope", key=KEY)[0] == 403
    assert post(f"{srv.url}/machines/m1/report", {"result": "running", "token": a.token}, key=KEY) == (200, "ok\n")
    log = f"line & with = signs\nbbk.key={KEY}\n" * 10
    code, _ = post(f"{srv.url}/machines/m1/report",
                   {"result": "good", "token": a.token, "uname": "6.1-x", "log": log, "stage": "2"}, key=KEY)
    assert code == 200
    assert srv.registry.get("m1").last_report["log"] == log.replace(KEY, "<machine key>")
    code, body = post(f"{srv.url}/machines/m1/report", {"result": "good", "token": a.token}, key=KEY)
    assert code == 403 and "replayed" in body
    code, body = post(f"{srv.url}/machines/m1/report", {"result": "good", "token": "0" * 32}, key=KEY)
    assert code == 403 and "forged" in body


def test_key_as_form_field(srv):
    assert post(f"{srv.url}/machines/m1/boot", {"key": KEY}) == (200, "WAIT=3\n")
    assert get(f"{srv.url}/machines/m1/boot?key={KEY}") == (200, "WAIT=3\n")


def test_state_json_with_the_key(srv):
    code, body = get(f"{srv.url}/machines/m1", key=KEY)
    assert code == 200 and json.loads(body)["name"] == "m1"
    for path in ("/machines/", "/machines"):
        code, body = get(srv.url + path)
        assert code == 404 and "m1" not in body


def test_errors_are_explicit(srv):
    code, body = get(f"{srv.url}/machines/nope/boot")
    assert code == 404 and "unknown machine" in body and "m1" not in body
    assert get(f"{srv.url}/machines/m1/report", key=KEY)[0] == 405
    assert get(f"{srv.url}/machines/m1/bogus", key=KEY)[0] == 404


def test_initrd_is_served_to_the_machine(srv):
    assert get(f"{srv.url}/machines/m1/initrd", key=KEY) == (200, "local os")
    assert get(f"{srv.url}/machines/m1/initrd")[0] == 403
