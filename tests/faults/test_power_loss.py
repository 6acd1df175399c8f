"""Fault 5: a test machine's power lost in the middle of a bisect's test: its QEMU process SIGKILLed.

The QEMU farm of tests/farm/test_bisect_e2e.py (real kernels built by the pipeline, a QEMU machine booted
through stage 1, kexec and stage 2; history C0 .. C3(MARKER) .. C8).  A test-mode bisect of C0..C5 runs on
vm1; when the farm's state says its first candidate is running the test, the test kills QEMU.  The attempt
is an infrastructure failure, the step is retried on a fresh power-on, and the bisect names C3.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from farm import loop_farm
from farm import test_bisect_e2e as e2e
from integration.harness import bisect_build, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.realkernel, pytest.mark.faults, pytest.mark.timeout(1500)]
linux_tree, farm_master = loop_farm.linux_tree, e2e.farm_master  # the QEMU farm's fixtures, shared


def vm1(master) -> dict:
    try:
        return json.loads((master.dir / "state" / "farm.json").read_text())["machines"]["vm1"]
    except (OSError, ValueError, KeyError):
        return {}


def test_power_lost_mid_test_is_an_infra_failure_retried_and_the_bisect_ends_right(farm_master):
    master, shas, _ = farm_master
    t0 = time.monotonic()
    # a test that runs for seconds, as lab tests do: grepping dmesg alone ends within milliseconds of the
    # "running" report, and the power must go while the test runs, not after its verdict
    bsid = e2e.force(master, shas, "vm1", "test", 0, 5, f"sleep 3; {e2e.TEST_CMD}")
    running = wait_for(lambda: (vm1(master).get("assignment") or {}).get("phase") == "running"
                       and vm1(master)["assignment"], 900, "vm1 to run the first test")
    console = master.dir / "state" / "farm" / "qemu" / "vm1.console.log"
    [pid] = loop_farm.qemu_pids(console)
    os.kill(pid, signal.SIGKILL)  # the power is gone

    build = bisect_build(master, bsid, timeout=900)
    assert build["results"] == e2e.SUCCESS, build["state_string"]
    result = e2e.result_of(master, build)
    assert result["status"] == "done" and result["first_bad"]["sha"] == shas[e2e.MARKER_AT], result
    assert result["last_good"]["sha"] == shas[e2e.MARKER_AT - 1]
    e2e.check_steps(master, result, shas)
    [step] = [s for s in result["steps"] if s["image"] == running["image"]]
    # the killed attempt is an infrastructure failure; the verdict is the retry's, on a new power-on
    assert len(step["attempts"]) == 2, step
    assert step["attempts"][0].startswith("attempt 1: infra: the machine lost power (running): its QEMU process "
                                          "killed by signal 9"), step["attempts"]
    assert step["verdict"] in ("good", "bad") and step["uname"] == step["image"]
    sha = loop_farm.images(master)[step["image"]]["sha"]
    assert step["verdict"] == ("bad" if sha in shas[e2e.MARKER_AT:] else "good")
    assert len(loop_farm.qemu_pids(console)) == 1  # powered on again, once
    wait_for(lambda: vm1(master).get("state") == "idle", 60, "vm1 idle again")
    assert vm1(master)["infra_failures"] == 0 and not vm1(master)["broken_reason"]
    print(f"fault 5 (QEMU killed mid-test): bisect {len(result['steps'])} steps, {time.monotonic() - t0:.0f}s")
