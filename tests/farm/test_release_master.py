"""The release on a real master: a machine held by a build goes back to its default (stage 1 here) when
that build ends, and one left held by a build of a stopped master is released when the master starts.

The machine is a lab ("remote") machine played by a thread of the test with the requests stage 1 and
stage 2 send; the build holding it is an image test of the branch's head image (the regression watch),
which runs through the same tester seam as a bisect step (steps/bisect_testers.py MachineTester).
"""

from __future__ import annotations

import json
import urllib.parse

import pytest
from integration.harness import FixtureRepo, Master, Worker, free_port, settings_text, wait_for

from buildbot_kernel.farm.registry import Registry
from buildbot_kernel.farm.testing import http_get as get
from farm.played import PlayedMachine

pytestmark = pytest.mark.integration
BRANCH = "drm-intel-fixes"
KEY = "bGFiMSdzIGtleSBmb3IgdGhlIHJlbGVhc2UgdGVzdA=="
EXTRA = """
[[machine]]
name = "lab1"
type = "remote"
soft_reboot = "true"
power_cycle = "true"
key_file = "{key}"
poll = 1
boot_timeout = 60
test_timeout = 60
retries = 0
[[test]]
name = "boots"
command = "true"
branches = ["{branch}"]
testers = ["lab1"]
"""


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    base = tmp_path_factory.mktemp("release")
    repo = FixtureRepo(base, (BRANCH,))
    key = base / "lab1.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    m = Master(base, settings_text(str(repo.bare), [BRANCH], ports, poll=3600,
                                   extra=EXTRA.format(key=key, branch=BRANCH)))
    # the state a master stopped during a bisect on lab1 leaves behind: held by a build that is gone
    state = m.dir / "state"
    state.mkdir(parents=True, exist_ok=True)
    Registry(["lab1"], state / "farm.json").set_owner("lab1", "bisect 20261130-0001")
    m.start(ports["web"])
    m.image_port = ports["image"]
    worker = Worker(base, "w1", "pw", ports["worker"])
    yield m, worker
    worker.stop()
    m.stop()


def _state(m) -> dict:
    return json.loads((m.dir / "state" / "farm.json").read_text())["machines"]["lab1"]


def test_a_machine_held_by_a_gone_build_is_released_at_start(master):
    m, _ = master
    url = f"http://127.0.0.1:{m.image_port}/machines/lab1"
    wait_for(lambda: _state(m)["owner"] == "", 60, "the orphaned machine to be released")
    assert _state(m)["state"] == "idle" and _state(m)["to_stage1"]
    assert get(f"{url}/boot", key=KEY) == (200, "REBOOT=1\nWAIT=1\n")


def test_the_end_of_a_test_build_sends_the_machine_home(master):
    m, worker = master
    url = f"http://127.0.0.1:{m.image_port}/machines/lab1"
    machine = PlayedMachine(url, KEY)
    machine.start()
    try:
        wait_for(lambda: machine.stage == "1", 30, "lab1 back in stage 1 after the start's release")
        machine.stage = "2"  # pretend it sits in a candidate again: it is told nothing more (it is home)
        worker.start()  # the head is built, published, and its image test holds lab1
        wait_for(lambda: machine.booted, 240, "lab1 to boot the head image for the image test")
        name = machine.booted[0]
        builds = wait_for(lambda: [b for b in m.builds("image-test") if b["complete"]] or None, 120,
                          "the image-test build to end")
        assert builds[0]["results"] == 0, builds[0]["state_string"]
        # the build ended: the machine is free and told to go home from the candidate it still runs
        wait_for(lambda: _state(m)["owner"] == "" and _state(m)["to_stage1"] is False
                 and machine.stage == "1", 60, "lab1 released and back in stage 1")
        told = [body for stage, body in machine.answers if stage == "2" and "REBOOT=1" in body]
        assert told, machine.answers[-10:]
        assert _state(m)["state"] == "idle" and _state(m)["last_kernel"] == name
        polls_before = machine.polls
        wait_for(lambda: machine.polls >= polls_before + 10, 30, "ten more idle polls")
    finally:
        machine.stop.set()
        machine.join(10)
    # idle polls are not in the master's log each time (the access log goes to twistd.log)
    log = (m.dir / "twistd.log").read_text()
    logged = log.count('"POST /machines/lab1/boot')
    assert logged < machine.polls / 3, (logged, machine.polls)
    assert urllib.parse.quote(KEY) not in log and KEY not in log
