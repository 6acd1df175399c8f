"""Machine keys and the holes of the hostile review, over real HTTP on 127.0.0.1 (README "Machine keys").

Each hole of issue 8 about the test farm is its own test: the live token handed to anyone who asked,
a third party's GET turning a good commit into "bad: boot failure on every attempt", a forged report
with a token from GET /boot, a report body read whole before its size was checked, a 404 listing every
machine, and a broken machine nobody could repair except from a test.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buildbot_kernel.farm import instructions as ins
from buildbot_kernel.farm.driver import MachineDriver
from buildbot_kernel.farm.http import MAX_REPORT_BYTES
from buildbot_kernel.farm.registry import Registry
from buildbot_kernel.farm.testing import FarmServer, ReactorThread
from buildbot_kernel.farm.testing import http_get as get
from buildbot_kernel.farm.testing import http_post as post
from buildbot_kernel.settings import Machine

SHA = "ab" * 32
KEY = "the-m1-machine-key-0123456789"
IMAGE = {"name": "6.1.0-good", "url": "http://h/i/", "files": {"vmlinuz": {"sha256": SHA}}}


class Farm:
    def __init__(self, tmp: Path):
        (tmp / "initrd").write_bytes(b"local os")
        self.state = tmp / "state.json"
        self.registry = Registry(["m1"], self.state, keys={"m1": KEY})
        self.server = FarmServer(tmp, self.registry, poll={"m1": 1}, initrds={"m1": str(tmp / "initrd")})
        self.server.start()
        self.url = f"{self.server.url}/machines/m1"

    def file(self) -> tuple[bytes, int]:
        return self.state.read_bytes(), self.state.stat().st_mtime_ns

    def memory(self) -> tuple:
        st = self.registry.get("m1")
        ledger = dict(self.registry.ledgers["m1"].history)
        return st.state, st.last_seen, st.last_poll, st.refused, st.assignment, ledger


@pytest.fixture
def farm(tmp_path):
    f = Farm(tmp_path)
    yield f
    f.server.stop()


def assign(farm) -> ins.Assignment:
    a = ins.make_assignment(Machine(name="m1"), IMAGE, "true", "boot", farm.server.url)
    farm.registry.assign(a)
    return a


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("key", [None, "", "wrong-key-0123456789", KEY[:-1], KEY + "x"])
def test_without_the_right_key_every_request_is_403_and_nothing_changes(farm, key, caplog):
    a = assign(farm)
    farm.registry.boot_request("m1")  # the machine fetched it: a report would now be accepted
    before_file, before_memory = farm.file(), farm.memory()
    caplog.set_level("WARNING", logger="buildbot_kernel.farm")
    answers = [
        get(farm.url, key=key), get(f"{farm.url}/", key=key),
        get(f"{farm.url}/boot", key=key), post(f"{farm.url}/boot", {}, key=key),
        post(f"{farm.url}/report", {"result": "bad", "token": a.token, "uname": IMAGE["name"]}, key=key),
        post(f"{farm.url}/report", {"result": "kexec", "token": a.token, "key": key or ""}),
        get(f"{farm.url}/test?token={a.token}", key=key), get(f"{farm.url}/initrd", key=key),
    ]
    for code, body in answers:
        assert code == 403 and "key" in body and a.token not in body, (code, body)
    assert farm.file() == before_file and farm.memory() == before_memory
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and "missing or wrong machine key" in lines[0], lines  # rate-limited


def test_the_token_is_handed_to_the_key_holder_only(farm):
    a = assign(farm)
    code, body = get(f"{farm.url}/boot")
    assert code == 403 and a.token not in body
    code, body = post(f"{farm.url}/boot", {}, key=KEY)
    assert code == 200 and ins.parse(body)["TOKEN"] == a.token


def test_third_party_gets_during_a_boot_change_nothing_and_the_good_commit_stays_good(farm):
    """The hole: GET /boot while the candidate booted was a "reset", so a good commit ended as
    "bad: boot failure on every attempt".  Now a GET without the key is refused and even the key
    holder's GET only looks."""
    results = []
    powered = []
    driver = MachineDriver(Machine(name="m1", boot_timeout=30, test_timeout=30, retries=2, poll=1),
                           farm.registry, type("Power", (), {"soft_reboot": lambda self: powered.append(1),
                                                             "power_cycle": lambda self: powered.append(2)})(),
                           farm.server.url)

    def start():
        driver.run_step(dict(IMAGE), "true", "boot").addBoth(results.append)

    ReactorThread.call(start)
    wait_for(lambda: farm.registry.assignment("m1"), 10, "the step's assignment")
    code, body = post(f"{farm.url}/boot", {}, key=KEY)  # stage 1 asks
    token = ins.parse(body)["TOKEN"]
    assert post(f"{farm.url}/report", {"result": "kexec", "token": token}, key=KEY)[0] == 200
    before_file, before_memory = farm.file(), farm.memory()
    for _ in range(2):  # a third party, then an admin with the key who only looks
        assert get(f"{farm.url}/boot")[0] == 403
        assert get(f"{farm.url}/boot", key=KEY) == (200, "WAIT=1\n")
    assert farm.file() == before_file and farm.memory() == before_memory
    assert farm.registry.assignment("m1").phase == "kexec"
    assert post(f"{farm.url}/report", {"result": "running", "token": token, "uname": IMAGE["name"]},
                key=KEY)[0] == 200
    assert post(f"{farm.url}/report", {"result": "good", "token": token, "uname": IMAGE["name"]}, key=KEY)[0] == 200
    out = wait_for(lambda: results, 10, "the step's outcome")[0]
    assert out.verdict == "good" and len(out.attempts) == 1, out


def test_forged_report_with_a_token_is_refused(farm):
    """The hole: a third party read the token from GET /boot and POSTed result=bad."""
    a = assign(farm)
    post(f"{farm.url}/boot", {}, key=KEY)
    before_file, before_memory = farm.file(), farm.memory()
    for key in (None, "forged-key-0123456789"):
        code, body = post(f"{farm.url}/report", {"result": "bad", "token": a.token, "uname": IMAGE["name"]}, key=key)
        assert code == 403
    assert farm.file() == before_file and farm.memory() == before_memory
    assert post(f"{farm.url}/report", {"result": "good", "token": a.token, "uname": IMAGE["name"]}, key=KEY)[0] == 200
    assert farm.registry.get("m1").last_report["result"] == "good"


def _raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def _read_all(s: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def test_oversized_report_is_refused_before_its_body_is_read(farm):
    a = assign(farm)
    post(f"{farm.url}/boot", {}, key=KEY)
    before_file, before_memory = farm.file(), farm.memory()
    port = farm.server.port_number
    # a huge Content-Length and not one byte of body: the answer comes at once, the connection closes
    with _raw(port) as s:
        s.sendall(b"POST /machines/m1/report HTTP/1.1\r\nHost: 127.0.0.1\r\nX-BBK-Key: " + KEY.encode()
                  + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 99999999999\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        started = time.monotonic()
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer, answer
    assert time.monotonic() - started < 5  # not waiting for a body
    # a slow chunked body without a length: refused as soon as it passes the limit, not at its end
    with _raw(port) as s:
        s.sendall(b"POST /machines/m1/report HTTP/1.1\r\nHost: 127.0.0.1\r\nX-BBK-Key: " + KEY.encode()
                  + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        sent, answer = 0, b""
        s.settimeout(0.2)
        while sent <= 2 * MAX_REPORT_BYTES and not answer:
            try:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                answer = s.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        s.settimeout(5)
        answer += _read_all(s)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert sent <= MAX_REPORT_BYTES + 2 * len(chunk)
    assert farm.file() == before_file and farm.memory() == before_memory
    # the machine's own report still goes through
    assert post(f"{farm.url}/report", {"result": "good", "token": a.token, "uname": IMAGE["name"]}, key=KEY)[0] == 200


def test_unknown_machine_404_names_no_machine(farm):
    for path in ("/machines/nope", "/machines/nope/boot", "/machines/..%2Fm1/boot", "/machines/", "/machines"):
        code, body = get(farm.server.url + path, key=KEY)
        assert code == 404 and "m1" not in body, (path, code, body)


# -- repair: the CLI against a real master ------------------------------------------------------------

MACHINE = """
[[machine]]
name = "skl-1"
type = "remote"
power_cycle = "true"
key_file = "{key}"
"""


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    from integration.harness import FixtureRepo, Master, free_port, settings_text

    base = tmp_path_factory.mktemp("repair")
    repo = FixtureRepo(base, branches=("drm-intel-fixes",))
    key = base / "skl-1.key"
    key.write_text("c2tsLTEncyBrZXkgZm9yIHRoZSByZXBhaXIgdGVzdA==\n")
    key.chmod(0o600)
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    m = Master(base, settings_text(str(repo.bare), ["drm-intel-fixes"], ports, poll=3600,
                                   extra=MACHINE.format(key=key)))
    state = m.dir / "state"
    state.mkdir(parents=True, exist_ok=True)
    broken = Registry(["skl-1"], state / "farm.json")
    broken.mark_broken("skl-1", "the PDU does not answer")
    m.start(ports["web"])
    m.image_port, m.key = ports["image"], key.read_text().strip()
    yield m
    m.stop()


def _cli(*args):
    REPO = Path(__file__).resolve().parents[2]  # the checkout, for the subprocess's PYTHONPATH

    main = "import sys; from buildbot_kernel.cli import main; sys.exit(main())"  # as the console script does
    return subprocess.run([sys.executable, "-c", main, "machine", "repair", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=180,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_repair_from_the_command_line(master):
    import json

    state = master.dir / "state" / "farm.json"
    assert json.loads(state.read_text())["machines"]["skl-1"]["state"] == "broken"
    schedulers = master.get("forceschedulers")["forceschedulers"]
    repair = [s for s in schedulers if s["name"] == "repair-machine"]
    assert repair and repair[0]["builder_names"] == ["machines"]  # the UI's button
    url = f"http://127.0.0.1:{master.web_port}/"
    p = _cli("nope", "--master", url)
    assert p.returncode == 2 and "nope" in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = _cli("skl-1", "--master", url)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "repaired skl-1 (was broken (the PDU does not answer))" in p.stdout
    wait_for(lambda: json.loads(state.read_text())["machines"]["skl-1"]["state"] == "idle", 10,
             "the repaired state on disk")
    p = _cli("skl-1", "--master", url, "--user", "alice", "--password-file", "/nonexistent")
    assert p.returncode == 2 and "--password-file" in p.stderr


def test_the_masters_image_port_checks_keys_and_body_size(master):
    """The same rules on the master's own image server, where the farm mounts /machines."""
    url = f"http://127.0.0.1:{master.image_port}/machines/skl-1"
    wait_for(lambda: get(f"{url}/boot", key=master.key)[0] == 200, 30, "the farm on the image port")
    assert get(f"{url}/boot")[0] == 403 and get(f"{url}/boot", key="x" * 20)[0] == 403
    code, body = get(f"http://127.0.0.1:{master.image_port}/machines/nope/boot")
    assert code == 404 and "skl-1" not in body
    with _raw(master.image_port) as s:
        s.sendall(b"POST /machines/skl-1/report HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999\r\n\r\n")
        assert _read_all(s).startswith(b"HTTP/1.1 413 ")
