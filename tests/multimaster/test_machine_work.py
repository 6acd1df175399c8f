"""The test farm with both masters up (README.md "Growing past one machine").

Master a starts first and holds the farm's lock; master b has the same ``[[machine]]`` and ``[[test]]``
(so it could start machine work and fail it: "runs on another master") and the only build worker.  What
must cross masters is made to depend on it:

* b builds and publishes the head's image; the regression watch's test of it on the machine's class is
  scheduled by b and run by a;
* a bisect on the machine forced through b's REST API runs on a (its builds on b's worker) and finds
  the culprit;
* with a stopped, a machine test forced through b waits in the queue while b runs a local test forced
  after it, and a claims it once it is back.

The machine is a lab machine played by a thread of the test (tests/farm/played.py); its test is whether
the kernel it was told to boot holds the planted REGRESSION.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest
from farm.played import PlayedMachine
from faults.tools import start_worker
from integration.harness import FixtureRepo, Worker, bisect_build, wait_for

from buildbot_kernel.farm.testing import http_get
from multimaster.masters import BRANCH, SUCCESS, master_ids, new_master, planted_history, two_settings, worker_toml

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.multimaster]
FAILURE = 2
KEY = "bGFiMSdzIGtleSBmb3IgdGhlIHR3by1tYXN0ZXIgZmFybQ=="
FARM = f"""
[[machine]]
name = "lab1"
type = "remote"
class = "rack"
soft_reboot = "true"
power_cycle = "true"
key_file = "{{key}}"
poll = 1
boot_timeout = 60
test_timeout = 60
retries = 0
[[test]]
name = "check"
command = '! grep -q REGRESSION "/boot/vmlinuz-$(uname -r)"'
mode = "test"
branches = ["{BRANCH}"]
testers = ["rack"]
[[test]]
name = "check-here"
command = '! grep -q REGRESSION "$BISECT_IMAGE_DIR/vmlinuz"'
mode = "test"
testers = ["local"]
"""


def regression_check(instructions: dict) -> str:
    """What the "check" test finds on the machine: the planted REGRESSION in the kernel it booted."""
    with urllib.request.urlopen(instructions["KERNEL_URL"], timeout=10) as r:
        return "bad" if b"REGRESSION" in r.read() else "good"


def farm_answers(url: str) -> bool:
    try:
        return http_get(f"{url}/boot", key=KEY)[0] == 200
    except OSError:
        return False


def machines_table(master) -> str:
    """The "Test machines" section of the master's Kernels page, as its web UI serves it."""
    url = f"http://127.0.0.1:{master.web_port}/plugins/wsgi_dashboards/kernels/page.html"
    with urllib.request.urlopen(url, timeout=30) as r:
        page = r.read().decode()
    return page[page.index('<h2 id="machines">'):]


def request_of(master, bsid: int) -> dict:
    return master.get(f"buildrequests?buildsetid={bsid}")["buildrequests"][0]


def builds_of(master, bsid: int) -> list[dict]:
    brid = request_of(master, bsid)["buildrequestid"]
    return master.get(f"builds?buildrequestid={brid}&property=*&order=buildid")["builds"]


def test_machine_work_runs_on_the_farms_master_and_waits_for_it(tmp_path, postgres, crossbar):
    t0 = time.monotonic()
    repo = FixtureRepo(tmp_path, (BRANCH,))
    shas = planted_history(repo)
    key = tmp_path / "lab1.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    db = postgres.create_database("two_masters_farm")
    (text_a, ports_a), (text_b, ports_b) = two_settings(tmp_path, repo, db, crossbar.url,
                                                        worker_toml("w1") + FARM.format(key=key))
    a = new_master(tmp_path / "a", text_a, upgrade=True)
    b = new_master(tmp_path / "b", text_b)
    worker = Worker(tmp_path, "w1", "pw", ports_b["worker"])  # every build runs on b
    url = f"http://127.0.0.1:{ports_a['image']}/machines/lab1"
    machine = PlayedMachine(url, KEY, verdict=regression_check)
    images = tmp_path / "shared" / "images"
    try:
        a.start(ports_a["web"])
        wait_for(lambda: farm_answers(url), 120, "the test farm on master a")
        machine.start()
        b.start(ports_b["web"])
        start_worker(worker, b)
        ids = master_ids(b)
        id_a, id_b = ids[str(a.dir)], ids[str(b.dir)]
        wait_for(lambda: "runs on another master" in (b.dir / "twistd.log").read_text(), 60,
                 "master b to leave the farm to a")  # b has [[machine]] but no farm of its own

        # a bisect on the machine, through b's REST API (b has the form, the machine and the test too)
        bsid = b.force("bisect", {"target": BRANCH, "tester": "lab1", "test": "check", "command": "",
                                  "mode": "test", "good": shas[0], "bad": shas[4], "build_missing": True,
                                  "build_config": "x86_64", "max_steps": 0})
        build = bisect_build(b, bsid, timeout=300)
        assert build["results"] == SUCCESS, build["state_string"]
        assert f"first bad commit {shas[3][:12]}" in build["state_string"]
        assert build["masterid"] == id_a  # run by the farm's master: b never started it
        assert len(builds_of(b, bsid)) == 1
        on_demand = [x for x in b.builds(f"bisect-build-{BRANCH}") if x["complete"]]
        assert on_demand and {x["masterid"] for x in on_demand} == {id_b}  # its builds: on b's worker

        # the regression watch: b built the head's image, a tested it on the machine (a class of one)
        def watched():
            return [x for x in b.builds("image-test") if x["complete"]] or None
        tests = wait_for(watched, 240, "the regression watch's test of the head's image")
        head = [x for x in b.builds(BRANCH) if x["complete"] and x["results"] == SUCCESS]
        assert [x["properties"]["got_revision"][0] for x in head] == [shas[4]] and head[0]["masterid"] == id_b
        assert len(tests) == 1 and tests[0]["masterid"] == id_a, tests
        assert tests[0]["properties"]["tester"][0] == "lab1"
        entry = next(i for i in json.loads((images / "index.json").read_text())["images"] if i.get("head"))
        assert entry["sha"] == shas[4] and entry["tests"]["check"]["result"] == "fail"  # REGRESSION found
        assert entry["tests"]["check"]["machine"] == "lab1"
        booted = set(machine.booted)
        assert entry["name"] in booted and len(booted) >= 3, booted  # the head, and the bisect's steps
        wait_for(lambda: a.idle() and b.idle(), 120, "both masters to be idle")

        # both masters serve the UI: b's Kernels page shows the machine a drives, as a's does
        shown_a, shown_b = machines_table(a), machines_table(b)
        assert ">lab1<" in shown_b and "No <code>[[machine]]</code>" not in shown_b, shown_b
        kernels = re.findall(r"<code>([^<]*)</code>", shown_b)
        assert kernels == re.findall(r"<code>([^<]*)</code>", shown_a) and kernels[0] in booted, (shown_a, shown_b)

        # the farm's master is down: machine work waits in the queue, local work goes on
        a.stop()
        wait_for(lambda: not (a.dir / "twistd.pid").exists() and not farm_answers(url), 60, "master a to be down")
        waiting = b.force("test-image", {"image_test": "check", "image_name": entry["name"]})
        local = b.force("test-image", {"image_test": "check-here", "image_name": entry["name"]})
        done = wait_for(lambda: [x for x in builds_of(b, local) if x["complete"]] or None, 180,
                        "the local test b runs meanwhile")
        assert done[0]["masterid"] == id_b and done[0]["results"] == FAILURE, done  # REGRESSION found here too
        # b was offered the machine test before the local one (forced first) and left it queued
        req = request_of(b, waiting)
        assert not req["claimed"] and not req["complete"] and not builds_of(b, waiting), req

        a.start(ports_a["web"])  # back: it claims what waited for it
        ran = wait_for(lambda: [x for x in builds_of(b, waiting) if x["complete"]] or None, 180,
                       "the waiting machine test, claimed by a")
        assert len(ran) == 1 and ran[0]["masterid"] == id_a, ran
        said = [st["state_string"] for st in b.steps(ran[0]["buildid"])]
        assert ran[0]["results"] == FAILURE and f"check on {entry['name']}: fail" in " ".join(said), said
        # nothing that drives the machine ever ran on b
        for builder in ("bisect", "image-test"):
            assert id_b not in {x["masterid"] for x in b.builds(builder) if x["properties"].get("tester", [""])[0]
                                != "local"}
    finally:
        machine.stop.set()
        worker.stop()
        a.stop()
        b.stop()
        machine.join(10)
    print(f"two masters, machine work on the farm's master: {time.monotonic() - t0:.0f}s")
