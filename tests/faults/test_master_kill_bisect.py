"""Fault 2: the master SIGKILLed while a bisect's test runs (local tester, fixture tree).

History: C0 (good) - C1 - C2 - C3 (plants the regression) - C4 (bad, the branch head). Every commit the
bisect needs is built on demand; it takes two tests at least. The test command appends the commit it
tests to ``runs.log`` (the count of test runs, as a side effect nobody can fake) and, on the second test,
blocks on a named pipe: the master is killed while that test is running. After ``buildbot start`` the
bisect resumes from its log.
"""

from __future__ import annotations

import json
import time

import pytest
from integration.harness import FixtureRepo, Master, Worker, bisect_build, free_port, settings_text, wait_for

from .tools import Hold, power_cut, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.faults]
BRANCH = "drm-intel-fixes"
CHECK = '! grep -q REGRESSION "$BISECT_IMAGE_DIR/vmlinuz"'
SUCCESS, RETRY, CANCELLED = 0, 5, 6


def test_master_killed_mid_bisect_resumes_and_tests_the_interrupted_step_once_more(tmp_path):
    t0 = time.monotonic()
    repo = FixtureRepo(tmp_path, (BRANCH,))
    shas = repo.plant_regression(BRANCH, 4, culprit=3)
    repo.push(BRANCH)
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    master = Master(tmp_path, settings_text(str(repo.bare), (BRANCH,), ports, max_builds=3))
    worker = Worker(tmp_path, "w1", "pw", ports["worker"])
    hold = Hold(tmp_path)
    runs = tmp_path / "runs.log"
    command = (f'echo "$BISECT_SHA" >> {runs}; if [ "$(wc -l < {runs})" -eq 2 ]; then '
               f'echo reached >> {hold.log}; read line < {hold.fifo} || true; fi; {CHECK}')
    master.start(ports["web"])
    start_worker(worker, master)
    try:
        bsid = master.force("bisect", {"target": BRANCH, "tester": "local", "command": command, "mode": "test",
                                       "good": shas[0], "bad": shas[4], "build_missing": True,
                                       "build_config": "x86_64", "max_steps": 0})
        hold.wait_reached(1, timeout=300)  # the second test runs, held (two builds and a test before it)
        power_cut(master.dir)
        hold.let_go()  # the worker may still run the held command: let it end
        first, interrupted = runs.read_text().split()
        ident = next((master.dir / "state" / "bisects").iterdir())
        log = (ident / "bisect.log").read_text()
        assert [ln.split()[-1] for ln in log.splitlines() if ln.startswith(("git bisect good", "git bisect bad"))
                ] == [first]  # step 1 finished before the kill, step 2 did not

        master.start(ports["web"])
        build = bisect_build(master, bsid, timeout=150)
        assert build["results"] == SUCCESS, build["state_string"]
        assert f"first bad commit {shas[3][:12]}" in build["state_string"]
        result = json.loads((ident / "result.json").read_text())
        assert result["first_bad"]["sha"] == shas[3]
        wait_for(master.idle, 60, "the queue to drain")
        tested = runs.read_text().split()
        # the culprit's verification (re-test it bad, its parent good) runs last; the steps come before it
        checks = [v["sha"] for v in result["verification"]]
        assert result["verified"] is True and checks and tested[-len(checks):] == checks, (tested, checks)
        steps = tested[:-len(checks)]
        assert steps.count(first) == 1  # no finished step repeated
        assert steps.count(interrupted) == 2, steps  # the interrupted step tested exactly once more
        assert len(steps) == len(set(steps)) + 1  # and nothing else twice
        verdicts = [ln.split()[-1] for ln in (ident / "bisect.log").read_text().splitlines()
                    if ln.startswith("git bisect ") and not ln.startswith("git bisect start")]
        assert len(verdicts) == len(set(verdicts)) and interrupted in verdicts
        # the dead master's test request was not run beside the resumed one: it ended cancelled
        tests = [b for b in master.builds("bisect-test") if b["properties"]["bisect_sha"][0] == interrupted]
        ran = [b for b in tests if b["results"] not in (RETRY, CANCELLED)]
        # one run for the step (none for the dead master's orphan), plus the verification's if it is the culprit
        assert len(ran) == 1 + checks.count(interrupted), [(b["number"], b["results"], b["state_string"])
                                                           for b in tests]
    finally:
        hold.let_go()
        worker.stop()
        master.stop()
    print(f"fault 2 (master SIGKILL mid-bisect): {time.monotonic() - t0:.0f}s")
