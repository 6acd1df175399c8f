"""A bisect on a class of two QEMU machines, end to end: real master and worker, real kernels from the
prepared linux tree (tests/farm/planted_history.py), both machines booting candidates side by side.

History on linux-6.1.y::

    C0 - C1 - C2(MARKER) - C3 - C4

C1, C3 and C4 are built by the pipeline (pushed one after the other); C2 is built on demand.  The bisect
(C0 good, C4 bad, tester = the class "small", mode ``test``: the stage-2 test greps dmesg for the marker)
tests C1 and C3 in its first round, one on each machine at the same time (both have images), then C2 in
the second, and finds C2.
"""

from __future__ import annotations

import time

import pytest
from integration.harness import Master, Worker, bisect_build, free_port, settings_text, wait_for

from .loop_farm import BRANCH, CONFIG, image_shas, images, qemu_running
from .planted_history import make_history, push
from .test_bisect_e2e import TEST_CMD, result_of

pytestmark = [pytest.mark.e2e, pytest.mark.realkernel, pytest.mark.timeout(1500)]
MARKER_AT, LAST = 2, 4
PREBUILT = (1, 3, LAST)
SUCCESS = 0
MACHINE = """
[[machine]]
name = "{name}"
class = "small"
type = "qemu"
memory = 512
boot_timeout = 60
test_timeout = 60
retries = 1
poll = 1
cmdline = "console=ttyS0 panic=-1"
"""


@pytest.fixture(scope="module")
def class_master(linux_tree, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    import subprocess

    base = tmp_path_factory.mktemp("bisect-class-e2e")
    upstream = base / "linux.git"
    subprocess.run(["git", "clone", "-q", "--shared", "--bare", str(linux_tree), str(upstream)], check=True)
    work = base / "dev"
    shas = make_history(upstream, work, BRANCH, LAST, {MARKER_AT: "marker"})
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    machines = "".join(MACHINE.replace("{name}", n) for n in ("vm1", "vm2"))
    text = settings_text(str(upstream), [BRANCH], ports, extra=machines, poll=2).replace(
        'config = "defconfig"\n', f'config = "tinyconfig"\nfragments = ["{CONFIG}"]\n')
    master = Master(base, text)
    worker = Worker(base, "w1", "pw", ports["worker"])
    try:  # a master that starts too slowly for `buildbot start` is stopped all the same
        master.start(ports["web"])
        worker.start()
        for i in PREBUILT:  # through the pipeline: push, poll, build, publish
            push(work, shas[i], BRANCH)
            wait_for(lambda i=i: shas[i] in image_shas(master), 900, f"the pipeline's image of C{i}")
        wait_for(master.idle, 120, "the pipeline to be idle")
        yield master, shas
    finally:
        worker.stop()
        master.stop()
    for vm in ("vm1", "vm2"):
        console = master.dir / "state" / "farm" / "qemu" / f"{vm}.console.log"
        wait_for(lambda c=console: not qemu_running(c), 30, f"{vm}'s QEMU to be stopped with the master")


def test_a_bisect_on_a_class_tests_side_by_side_on_both_machines(class_master):
    master, shas = class_master
    t0 = time.monotonic()
    bsid = master.force("bisect", {"target": BRANCH, "good": shas[0], "bad": shas[LAST], "tester": "small",
                                   "command": TEST_CMD, "mode": "test", "build_missing": True,
                                   "build_config": "x86_64", "max_steps": 0, "max_machines": 0})
    build = bisect_build(master, bsid, timeout=900)
    steps = {s["name"]: s for s in master.steps(build["buildid"])}
    strings = [s["state_string"] for s in steps.values()]
    assert build["results"] == SUCCESS, strings
    result = result_of(master, build)
    assert result["status"] == "done" and result["first_bad"]["sha"] == shas[MARKER_AT], result
    assert result["verified"] is True
    published = images(master)
    for s in result["steps"]:  # each candidate booted its own image, which reported its own name
        assert s["image"] in published and published[s["image"]]["sha"] == s["sha"] and s["uname"] == s["image"]

    # round 1: the two imaged commits, one per machine, at the same time
    first = result["rounds"][0]
    assert first["round"] == 1 and len(first["candidates"]) == 2, result["rounds"]
    assert {c["sha"] for c in first["candidates"]} == {shas[1], shas[3]}
    assert {c["tester"] for c in first["candidates"]} == {"vm1", "vm2"} and result["machines"] == ["vm1", "vm2"]
    tested = [s for s in result["steps"] if s["round"] == 1]
    spans = [(iso(s["test_started"]), iso(s["test_started"]) + s["machine_seconds"]) for s in tested]
    assert max(a for a, _ in spans) < min(b for _, b in spans), spans  # the two tests overlapped
    # round 2: the one commit left, built on demand (counted), then the culprit found
    assert [c["sha"] for c in result["rounds"][1]["candidates"]] == [shas[MARKER_AT]]
    assert result["builds"] == 1 and result["tests"] == 3

    # the UI: one step per round with its candidates and verdicts, links and the test's output
    first_round = steps["round-1"]["state_string"]
    assert first_round.startswith("round 1: 2 candidates: ") and "good" in first_round and "bad" in first_round
    assert steps["round-2"]["state_string"].startswith(f"round 2: 1 candidate: {shas[MARKER_AT][:12]} bad"), strings
    round2 = steps["round-2"]
    assert any(u["name"] == f"build {shas[MARKER_AT][:12]}" for u in round2["urls"]), round2["urls"]
    logs = master.get(f"steps/{round2['stepid']}/logs")["logs"]
    assert [lg["name"] for lg in logs] == [f"{shas[MARKER_AT][:12]} bad"]
    print(f"class bisect: {len(result['rounds'])} rounds, {result['tests']} tests on {result['machines']}, "
          f"{time.monotonic() - t0:.0f} s")


def iso(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
