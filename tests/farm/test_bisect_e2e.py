"""The bisect builder with a QEMU test machine as its tester, end to end: real master, real worker, real
kernels built by the pipeline from a real tree, booted by the farm (stage 1 -> kexec -> stage 2).

History on linux-6.1.y (a shared clone of the prepared linux tree, tests/farm/planted_history.py)::

    C0 - C1 - C2 - C3(MARKER) - C4 - C5 - C6(PANIC) - C7 - C8

C2 (the first head, a clean build) and C8 (the next head, incremental) are built by the pipeline before
any bisect; every other image a bisect needs is built on demand.  Three bisects are forced over REST at
once:

* mode ``test`` on vm1, C0..C5: the stage-2 test greps dmesg for the marker; the culprit is C3;
* mode ``boot`` on vm1, C0..C8: the panic resets the machine into stage 1 (``panic=-1``), a boot
  failure on every attempt is ``bad``; the culprit is C6.  It waits for vm1's lock until the first
  bisect is done;
* mode ``test`` on "dead", a machine whose power command fails: it is marked broken and the bisect
  ends aborted with that reason, with no verdict recorded.  Its own lock: it runs beside the others.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from integration.harness import Master, Worker, bisect_build, free_port, wait_for

from .loop_farm import BRANCH, farm_settings, image_shas, images, qemu_running
from .planted_history import MARKER, make_history, push

pytestmark = [pytest.mark.e2e, pytest.mark.realkernel, pytest.mark.timeout(1500)]
MARKER_AT, PANIC_AT, LAST = 3, 6, 8
PREBUILT = (2, LAST)
SUCCESS, FAILURE = 0, 2
MACHINES = """
[[machine]]
name = "vm1"
type = "qemu"
memory = 512
boot_timeout = 45
test_timeout = 60
retries = 1
poll = 1
cmdline = "console=ttyS0 panic=-1"

[[machine]]
name = "dead"
type = "remote"
power_cycle = "echo the PDU does not answer >&2; exit 1"
key_file = "{dead_key}"
retries = 0
poll = 1
"""
TEST_CMD = f'! dmesg | grep -q "{MARKER}"'


@pytest.fixture(scope="module")
def farm_master(linux_tree, tmp_path_factory):
    base = tmp_path_factory.mktemp("bisect-e2e")
    upstream = base / "linux.git"
    subprocess.run(["git", "clone", "-q", "--shared", "--bare", str(linux_tree), str(upstream)], check=True)
    work = base / "dev"
    shas = make_history(upstream, work, BRANCH, LAST, {MARKER_AT: "marker", PANIC_AT: "panic"})
    push(work, shas[PREBUILT[0]], BRANCH)
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    dead_key = base / "dead.key"
    dead_key.write_text("a-test-key-of-the-dead-machine\n")
    dead_key.chmod(0o600)
    text = farm_settings(upstream, ports, MACHINES.replace("{dead_key}", str(dead_key)))
    master = Master(base, text)
    worker = Worker(base, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    worker.start()
    t0 = time.monotonic()
    try:
        for i in PREBUILT:  # through the pipeline: push, poll, build, publish
            push(work, shas[i], BRANCH)
            wait_for(lambda i=i: shas[i] in image_shas(master), 900, f"the pipeline's image of C{i}")
        wait_for(master.idle, 120, "the pipeline to be idle")
        print(f"pipeline images of C{PREBUILT}: {time.monotonic() - t0:.0f} s")
        yield master, shas, ports
    finally:
        worker.stop()
        master.stop()
    console = master.dir / "state" / "farm" / "qemu" / "vm1.console.log"
    wait_for(lambda: not qemu_running(console), 30, "the test machine's QEMU to be stopped with the master")


def force(master, shas, tester, mode, good, bad, command="true") -> int:
    return master.force("bisect", {"target": BRANCH, "good": shas[good], "bad": shas[bad], "tester": tester,
                                   "command": command, "mode": mode, "build_missing": True,
                                   "build_config": "x86_64", "max_steps": 0})


def result_of(master, build) -> dict:
    d = master.dir / "state" / "bisects" / build["properties"]["bisect_id"][0]
    return json.loads((d / "result.json").read_text())


def check_steps(master, result, shas):
    """Every step ran on the image of its commit, which stays published, and the kernel that reported
    was that image (``uname -r`` == image name)."""
    published = images(master)
    for s in result["steps"]:
        assert s["tester"] == "vm1" and s["image"] in published, s
        assert published[s["image"]]["sha"] == s["sha"]
        assert s["sha"] in shas
        if s["uname"]:
            assert s["uname"] == s["image"], s
        else:  # no report at all: only a kernel that never reached stage 2
            assert "boot failure" in s["reason"] and shas.index(s["sha"]) >= PANIC_AT, s


def test_bisects_on_a_qemu_machine(farm_master):
    master, shas, ports = farm_master
    t0 = time.monotonic()
    prebuilt = image_shas(master)
    test_bs = force(master, shas, "vm1", "test", 0, 5, TEST_CMD)
    boot_bs = force(master, shas, "vm1", "boot", 0, LAST)
    dead_bs = force(master, shas, "dead", "test", 0, 5)

    # a broken machine ends its bisect with the reason, and its lock is not vm1's
    dead = bisect_build(master, dead_bs, timeout=120)
    assert dead["results"] == FAILURE and "aborted: " in dead["state_string"], dead["state_string"]
    result = result_of(master, dead)
    assert result["status"] == "aborted" and "broken" in result["reason"], result["reason"]
    assert "PDU does not answer" in result["reason"]
    assert result["steps"] == [] and result["first_bad"] is None  # no verdict for a dead machine

    test = bisect_build(master, test_bs, timeout=900)
    t_test = time.monotonic() - t0
    assert test["results"] == SUCCESS, test["state_string"]
    result = result_of(master, test)
    assert result["status"] == "done" and result["first_bad"]["sha"] == shas[MARKER_AT], result
    assert result["last_good"]["sha"] == shas[MARKER_AT - 1]
    check_steps(master, result, shas)
    assert all(s["uname"] for s in result["steps"])  # every candidate booted and reported
    marked = [s for s in result["steps"] if s["verdict"] == "bad"]
    assert marked and all(shas.index(s["sha"]) >= MARKER_AT for s in marked)

    boot = bisect_build(master, boot_bs, timeout=900)
    assert boot["results"] == SUCCESS, boot["state_string"]
    # vm1's lock: one bisect at a time on it (the build exists at once, its first step waits for the lock)
    [start] = [st for st in master.steps(boot["buildid"]) if st["name"] == "start"]
    assert start["started_at"] >= test["complete_at"]
    assert dead["started_at"] < test["complete_at"]  # another machine's bisect did not wait
    result = result_of(master, boot)
    assert result["status"] == "done" and result["first_bad"]["sha"] == shas[PANIC_AT], result
    check_steps(master, result, shas)
    failed = [s for s in result["steps"] if not s["uname"]]
    assert failed and all(s["verdict"] == "bad" and len(s["attempts"]) == 2 for s in failed)

    # some images came from the pipeline, the rest were built on demand and published for everyone
    assert prebuilt == {shas[i] for i in PREBUILT}
    tested = {s["sha"] for r in (result_of(master, test), result) for s in r["steps"]}
    assert tested - prebuilt and tested <= image_shas(master)

    # the farm's state, from the registry's state file (/machines/ lists nothing to anyone): vm1 idle on
    # the last kernel it ran, nothing refused; "dead" broken with its reason
    state = master.dir / "state" / "farm.json"

    def farm_machines() -> dict:
        try:
            return json.loads(state.read_text())["machines"]
        except (OSError, ValueError, KeyError):
            return {}

    wait_for(lambda: farm_machines().get("vm1", {}).get("state") == "idle", 30, "vm1 idle in the farm's state")
    machines = farm_machines()
    vm1, dead_m = machines["vm1"], machines["dead"]
    assert vm1["state"] == "idle" and not vm1["flagged"] and vm1["refused"] == 0, vm1
    assert vm1["last_kernel"] in images(master) and vm1["infra_failures"] == 0
    assert dead_m["state"] == "broken" and "PDU" in dead_m["broken_reason"]
    print(f"test-mode bisect {len(result_of(master, test)['steps'])} steps, boot-mode {len(result['steps'])} "
          f"steps; both bisects {time.monotonic() - t0:.0f} s (test mode {t_test:.0f} s)")
