"""A machine goes back to its default when the bisect or test that held it ends: its default kernel
(``[[machine]] default_kernel``, by image name or URL) or stage 1, over real HTTP on 127.0.0.1 with the
real driver and registry; idle polls stay out of the access log but for one line per machine and interval.

The machine is played by the test with the requests stage 1 and stage 2 send (scripts/stage1/bbk-lib.sh).
"""

from __future__ import annotations

import json

import pytest
from integration.harness import wait_for

from buildbot_kernel.farm import instructions as ins
from buildbot_kernel.farm.driver import MachineDriver
from buildbot_kernel.farm.registry import Registry
from buildbot_kernel.farm.testing import FarmServer, ReactorThread, write_image
from buildbot_kernel.farm.testing import http_get as get
from buildbot_kernel.farm.testing import http_post as post
from buildbot_kernel.settings import Machine

KEY = "m1-key-for-the-release-tests"
CANDIDATE = {"name": "6.1.0-bad-candidate", "url": "http://h/i/", "files": {"vmlinuz": {"sha256": "ab" * 32}}}


class NoPower:
    """The machine polls already, so the driver never powers it; a call would be a test failure."""

    def soft_reboot(self):
        raise AssertionError("the released machine was powered")

    power_cycle = soft_reboot


@pytest.fixture
def farm(tmp_path):
    reg = Registry(["m1"], tmp_path / "state.json", keys={"m1": KEY})
    srv = FarmServer(tmp_path / "images", reg, poll={"m1": 2})
    (tmp_path / "images").mkdir()
    srv.start()
    yield srv, tmp_path
    srv.stop()


def _driver(srv, tmp, **machine):
    m = Machine(**{"name": "m1", "poll": 2, "boot_timeout": 30, "test_timeout": 30, "retries": 0, **machine})
    return MachineDriver(m, srv.registry, NoPower(), srv.url, public_base=srv.url,
                         index_path=str(tmp / "images" / "index.json"))


def _hold(srv, driver, build=41, run=None):
    """A bisect step that ends with a verdict: the machine is left in the candidate's stage 2, held.
    ``run`` starts the step (default: the driver's run_step, as the bisect's MachineTester calls it)."""
    url = f"{srv.url}/machines/m1"
    post(f"{url}/boot", {"stage": "2"}, key=KEY)  # it polls: the driver needs no power action
    outcomes = []
    run = run or (lambda: driver.run_step(CANDIDATE, "true", "test", "bisect b1", build))

    def start():  # the step's Deferred is not waited for here: the test plays the machine meanwhile
        run().addCallback(outcomes.append)

    ReactorThread.call(start)
    a = ins.parse(post(f"{url}/boot", {"stage": "2"}, key=KEY)[1])
    for result in ("kexec", "running", "bad"):
        assert post(f"{url}/report", {"result": result, "token": a["TOKEN"], "uname": CANDIDATE["name"]},
                    key=KEY)[0] == 200
    wait_for(lambda: outcomes, 30, "the step's outcome")
    # the driver's StepOutcome, or the tester's (verdict, details)
    verdict = outcomes[0][0] if isinstance(outcomes[0], tuple) else outcomes[0].verdict
    assert verdict == "bad"
    st = srv.registry.get("m1")
    assert st.owner == "bisect b1" and st.owner_build == build and st.last_kernel == CANDIDATE["name"]
    return outcomes[0]


def test_released_machine_reboots_into_stage1(farm):
    srv, tmp = farm
    driver = _driver(srv, tmp)
    _hold(srv, driver)
    url = f"{srv.url}/machines/m1"
    # before the end: the idle candidate waits, held by the bisect
    assert post(f"{url}/boot", {"stage": "2"}, key=KEY)[1] == "WAIT=2\n"
    ReactorThread.call(driver.release, 41)
    st = srv.registry.get("m1")
    assert (st.state, st.owner, st.owner_build, st.to_stage1) == ("idle", "", 0, True)
    assert get(f"{url}/boot", key=KEY)[1] == "REBOOT=1\nWAIT=2\n"  # an admin's look: what it will be told
    assert ins.parse(post(f"{url}/boot", {"stage": "2"}, key=KEY)[1]) == {"REBOOT": "1", "WAIT": "2"}
    # stage 1 is home: from now on it waits, and is told nothing else
    assert post(f"{url}/boot", {"stage": "1"}, key=KEY)[1] == "WAIT=2\n"
    assert not srv.registry.get("m1").to_stage1
    assert post(f"{url}/boot", {"stage": "2"}, key=KEY)[1] == "WAIT=2\n"
    saved = json.loads((tmp / "state.json").read_text())["machines"]["m1"]
    assert saved["owner"] == "" and saved["state"] == "idle"


def test_released_machine_boots_its_default_kernel(farm):
    srv, tmp = farm
    default = write_image(tmp / "images", srv.url, "6.1.0-lab-default", b"default kernel bytes")
    (tmp / "images" / "index.json").write_text(json.dumps({"schema": 1, "images": [default]}))
    driver = _driver(srv, tmp, default_kernel="6.1.0-lab-default", cmdline="console=ttyS0")
    _hold(srv, driver)
    ReactorThread.call(driver.release, 41)
    st = srv.registry.get("m1")
    assert (st.state, st.owner) == ("idle", "")
    url = f"{srv.url}/machines/m1"
    b = ins.parse(post(f"{url}/boot", {"stage": "2"}, key=KEY)[1])
    assert b["NAME"] == "6.1.0-lab-default" and b["KERNEL_URL"] == f"{srv.url}/farm-test/6.1.0-lab-default/vmlinuz"
    assert b["KERNEL_SHA256"] == default["files"]["vmlinuz"]["sha256"] and "console=ttyS0" in b["CMDLINE"]
    # the machine boots it like any kernel; the machine stays free meanwhile, and then runs the default
    for result in ("kexec", "running", "good"):
        assert post(f"{url}/report", {"result": result, "token": b["TOKEN"], "uname": "6.1.0-lab-default"},
                    key=KEY)[0] == 200
        assert srv.registry.get("m1").state == "idle"
    assert srv.registry.get("m1").last_kernel == "6.1.0-lab-default"
    assert post(f"{url}/boot", {"stage": "2"}, key=KEY)[1] == "WAIT=2\n"


def test_default_kernel_by_url_from_another_tree(farm):
    srv, tmp = farm
    write_image(tmp / "images", srv.url, "6.6.0-elsewhere", b"served elsewhere")
    driver = _driver(srv, tmp, default_kernel=f"{srv.url}/farm-test/6.6.0-elsewhere")  # not in index.json
    _hold(srv, driver)
    ReactorThread.call(driver.release, 41)
    b = ins.parse(get(f"{srv.url}/machines/m1/boot", key=KEY)[1])
    assert b["NAME"] == "6.6.0-elsewhere" and b["KERNEL_URL"].endswith("/farm-test/6.6.0-elsewhere/vmlinuz")


def test_a_default_kernel_url_with_hostile_metadata_sends_the_machine_to_stage1(farm):
    """Another server's metadata.json is checked as an index entry is: an image name with a path in it
    never becomes a boot instruction."""
    srv, tmp = farm
    write_image(tmp / "images", srv.url, "6.6.0-hostile", b"kernel")
    meta_path = tmp / "images" / "farm-test" / "6.6.0-hostile" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["name"] = meta["kernelrelease"] = "6.6.0/../../evil"
    meta_path.write_text(json.dumps(meta))
    driver = _driver(srv, tmp, default_kernel=f"{srv.url}/farm-test/6.6.0-hostile")
    _hold(srv, driver)
    ReactorThread.call(driver.release, 41)
    assert get(f"{srv.url}/machines/m1/boot", key=KEY)[1] == "REBOOT=1\nWAIT=2\n"


def test_a_missing_default_kernel_sends_the_machine_to_stage1(farm):
    srv, tmp = farm
    driver = _driver(srv, tmp, default_kernel="6.1.0-deleted-by-retention")
    _hold(srv, driver)
    ReactorThread.call(driver.release, 41)
    assert get(f"{srv.url}/machines/m1/boot", key=KEY)[1] == "REBOOT=1\nWAIT=2\n"


def test_the_end_of_an_earlier_build_does_not_release_a_later_owner(farm):
    srv, tmp = farm
    driver = _driver(srv, tmp)
    _hold(srv, driver, build=42)
    ReactorThread.call(driver.release, 41)  # build 41 ended late: 42 holds the machine now
    st = srv.registry.get("m1")
    assert st.owner == "bisect b1" and st.owner_build == 42 and not st.to_stage1


def test_idle_polls_are_logged_once_per_interval(tmp_path):
    from buildbot_kernel.farm.http import MachinesResource
    from buildbot_kernel.imagetree.httpguard import QUIET_EVERY, install_body_limit
    from buildbot_kernel.imagetree.server import make_site

    reg = Registry(["m1"], None, keys={"m1": KEY})
    access = tmp_path / "access.log"

    def listen():
        from twisted.internet import reactor

        site = make_site(str(tmp_path), access_log=str(access))
        site.resource.putChild(b"machines", MachinesResource(reg, {"m1": 2}))
        install_body_limit(site)
        return reactor.listenTCP(0, site, interface="127.0.0.1")

    port = ReactorThread.call(listen)
    url = f"http://127.0.0.1:{port.getHost().port}/machines/m1"
    try:
        for _ in range(5):
            assert post(f"{url}/boot", {"stage": "1"}, key=KEY) == (200, "WAIT=2\n")
        reg.release("m1")  # a REBOOT answer is not idle: logged every time
        for _ in range(2):
            assert "REBOOT=1" in post(f"{url}/boot", {"stage": "2"}, key=KEY)[1]
        assert post(f"{url}/report", {"result": "good", "token": "x"}, key=KEY)[0] == 403
    finally:
        ReactorThread.call(port.stopListening)
    lines = access.read_text().splitlines()
    boots = [line for line in lines if "POST /machines/m1/boot" in line]
    assert len(boots) == 3, lines  # one of the five idle polls, both reboot answers
    assert any("POST /machines/m1/report" in line for line in lines)
    assert QUIET_EVERY >= 60  # a poll every few seconds makes a line every few minutes at most


def test_the_testers_details_name_the_machine_and_its_qemu_accelerator(farm):
    from buildbot_kernel.imagetree.record import ImageRecord
    from buildbot_kernel.steps.bisect_testers import MachineTester

    srv, tmp = farm
    driver = _driver(srv, tmp)
    srv.registry.note_accel("m1", "tcg")
    tester = MachineTester(driver, "true", "test", owner="bisect b1", owner_build=41)
    image = ImageRecord("b", CANDIDATE["name"], {**CANDIDATE, "sha": "0" * 40, "build": "x86_64"}, url=CANDIDATE["url"])
    _, details = _hold(srv, driver, run=lambda: tester.test(image, "0" * 40))
    assert details["tester"] == "m1" and details["accel"] == "tcg"
    assert srv.registry.get("m1").owner_build == 41  # held in the name of the tester's build


def test_stopping_the_build_ends_the_attempt_at_once_and_the_release_follows(farm):
    """A stopped bisect or image test: its tester's cancel ends the machine's attempt under way (no
    waiting for boot_timeout, no retry, no verdict), and the release then sends the machine home."""
    import time

    from buildbot_kernel.imagetree.record import ImageRecord
    from buildbot_kernel.steps.bisect_testers import MachineTester
    from buildbot_kernel.steps.subbuilds import Interrupted

    srv, tmp = farm
    driver = _driver(srv, tmp, boot_timeout=600, retries=2)
    tester = MachineTester(driver, "true", "test", owner="bisect b2", owner_build=43)
    image = ImageRecord("b", CANDIDATE["name"], {**CANDIDATE, "sha": "0" * 40, "build": "x86_64"}, url=CANDIDATE["url"])
    url = f"{srv.url}/machines/m1"
    post(f"{url}/boot", {"stage": "2"}, key=KEY)
    ended = []
    ReactorThread.call(lambda: tester.test(image, "0" * 40).addBoth(ended.append) and None)
    a = ins.parse(post(f"{url}/boot", {"stage": "2"}, key=KEY)[1])
    assert post(f"{url}/report", {"result": "kexec", "token": a["TOKEN"]}, key=KEY)[0] == 200
    t0 = time.monotonic()
    ReactorThread.call(tester.cancel, "the bisect build was stopped")
    wait_for(lambda: ended, 10, "the cancelled step to end")
    assert time.monotonic() - t0 < 10 and ended[0].check(Interrupted)  # no verdict, no 600 s wait
    assert "the bisect build was stopped" in ended[0].getErrorMessage()
    st = srv.registry.get("m1")
    assert st.assignment is None and st.owner_build == 43 and st.state == "idle"
    assert post(f"{url}/report", {"result": "bad", "token": a["TOKEN"]}, key=KEY)[0] == 403  # stale now
    ReactorThread.call(driver.release, 43)
    assert srv.registry.get("m1").owner == "" and get(f"{url}/boot", key=KEY)[1] == "REBOOT=1\nWAIT=2\n"
    # a later owner's steps are not cancelled by the earlier build's stop
    _hold(srv, driver, build=44)
