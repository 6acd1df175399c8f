"""Two masters as README.md "Growing past one machine" sets them up: one PostgreSQL database, Buildbot's
WAMP message queue through a real crossbar router, one image tree and one state directory on a shared
directory (standing in for NFS), real buildbot-worker processes.

What can only work across masters is made to depend on it: the worker of the first test connects to one
master while the other master holds the poller and the schedulers, so the build exists only because the
other master's build request reached this one through the router (and the regression watch tests
each new image once, its result in the one index); the second test SIGKILLs whichever
master runs a bisect, in the middle of a test, and the other one finishes it from the shared log.
"""

from __future__ import annotations

import json
import time

import pytest
from faults.tools import Hold, power_cut, start_worker
from integration.harness import FixtureRepo, Master, Worker, bisect_build, wait_for

from multimaster.masters import BRANCH, SUCCESS, master_ids, new_master, planted_history, two_settings, worker_toml

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.multimaster]
# the regression watch: every new image of the branch is tested (on a build worker) and the result lands
# in the shared index
WATCH = (f'[[test]]\nname = "check"\ncommand = \'! grep -q REGRESSION "$BISECT_IMAGE_DIR/vmlinuz"\'\n'
         f'mode = "test"\nbranches = ["{BRANCH}"]\ntesters = ["local"]\ntimeout = 60\n')


def branch_builds(master: Master) -> list[dict]:
    return [b for b in master.builds(BRANCH) if b["complete"]]


def test_a_push_is_built_once_and_published_once_and_both_masters_show_it(tmp_path, postgres, crossbar):
    t0 = time.monotonic()
    repo = FixtureRepo(tmp_path, (BRANCH,))
    db = postgres.create_database("two_masters_push")
    (text_a, ports_a), (text_b, ports_b) = two_settings(tmp_path, repo, db, crossbar.url, worker_toml("w1") + WATCH)
    a = new_master(tmp_path / "a", text_a, upgrade=True)
    b = new_master(tmp_path / "b", text_b)
    worker = Worker(tmp_path, "w1", "pw", ports_a["worker"])  # builds run on a only
    images = tmp_path / "shared" / "images"
    try:
        b.start(ports_b["web"])  # b first: it claims the poller and the schedulers
        a.start(ports_a["web"])
        start_worker(worker, a)
        ids = master_ids(a)
        assert set(ids) == {str(a.dir), str(b.dir)} and master_ids(b) == ids
        # Buildbot's cluster claiming: one master polls the repository, the same one both masters name
        pollers = [c for c in b.get("changesources")["changesources"] if c["name"] == "poller-drm-intel"]
        assert len(pollers) == 1 and pollers[0]["master"]["masterid"] == ids[str(b.dir)], pollers
        assert a.get("changesources")["changesources"] == b.get("changesources")["changesources"]

        first = repo.head(BRANCH)  # the heads check at start-up builds the head
        wait_for(lambda: any(x["results"] == SUCCESS for x in branch_builds(a)), 240, "the head's build")
        sha = repo.commit_file(BRANCH, "drivers/gpu/two.c", "int two(void) { return 2; }\n", "drm/i915: two")
        repo.push(BRANCH)

        def tested():
            try:
                doc = json.loads((images / "index.json").read_text())
            except (OSError, ValueError):
                return None
            results = {i["sha"]: i.get("tests", {}).get("check", {}).get("result") for i in doc["images"]}
            return results if results.get(first) == results.get(sha) == "pass" else None
        wait_for(tested, 300, "the pushed commit's image, tested by the watch, in the shared index")
        wait_for(lambda: a.idle() and b.idle(), 120, "both masters to be idle")

        builds = branch_builds(b)
        assert builds == branch_builds(a)  # one database: both UIs show the same builds
        ok = [x for x in builds if x["results"] == SUCCESS]
        # built once each: the head at start-up and the push, both on a (the only worker), although b polled
        # and scheduled: a learnt of b's build requests through the router
        assert len(ok) == 2 and {x["masterid"] for x in builds} == {ids[str(a.dir)]}, builds
        revs = sorted(x["properties"]["got_revision"][0] for x in ok)
        assert revs == sorted([first, sha])
        doc = json.loads((images / "index.json").read_text())
        shas = [i["sha"] for i in doc["images"]]
        assert sorted(shas) == sorted([first, sha])  # published once each, one index
        assert len([d for d in (images / doc["images"][0]["path"]).parent.iterdir() if d.is_dir()]) == 2
        watch = [x for x in a.builds("image-test") if x["complete"]]
        assert len(watch) == 2 and all(x["results"] == SUCCESS for x in watch), watch  # each image tested once
        for m in (a, b):  # each master's own web UI shows the build
            shown = m.get(f"builders/{m.builder_id(BRANCH)}/builds?complete=true&property=got_revision")["builds"]
            assert sha in [x["properties"]["got_revision"][0] for x in shown if x["results"] == SUCCESS]
    finally:
        worker.stop()
        a.stop()
        b.stop()
    print(f"two masters, one push: {time.monotonic() - t0:.0f}s")


def test_a_master_killed_mid_bisect_the_other_finishes_it_without_repeating_a_step(tmp_path, postgres, crossbar):
    t0 = time.monotonic()
    repo = FixtureRepo(tmp_path, (BRANCH,))
    shas = planted_history(repo)
    db = postgres.create_database("two_masters_bisect")
    (text_a, ports_a), (text_b, ports_b) = two_settings(tmp_path, repo, db, crossbar.url, worker_toml("w1", "w2"))
    a = new_master(tmp_path / "a", text_a, upgrade=True)
    b = new_master(tmp_path / "b", text_b)
    workers = {a: Worker(tmp_path, "w1", "pw", ports_a["worker"]), b: Worker(tmp_path, "w2", "pw", ports_b["worker"])}
    hold = Hold(tmp_path)
    runs = tmp_path / "runs.log"
    check = '! grep -q REGRESSION "$BISECT_IMAGE_DIR/vmlinuz"'
    command = (f'echo "$BISECT_SHA" >> {runs}; if [ "$(wc -l < {runs})" -eq 2 ]; then '
               f'echo reached >> {hold.log}; read line < {hold.fifo} || true; fi; {check}')
    state = tmp_path / "shared" / "state"
    try:
        a.start(ports_a["web"])
        b.start(ports_b["web"])
        for m, w in workers.items():
            start_worker(w, m)
        bsid = a.force("bisect", {"target": BRANCH, "tester": "local", "command": command, "mode": "test",
                                  "good": shas[0], "bad": shas[4], "build_missing": True,
                                  "build_config": "x86_64", "max_steps": 0})
        hold.wait_reached(1, timeout=240)  # the second test runs, held
        ids = master_ids(a)
        req = a.get(f"buildrequests?buildsetid={bsid}")["buildrequests"][0]
        running = a.get(f"builds?buildrequestid={req['buildrequestid']}")["builds"]
        victim = a if running[-1]["masterid"] == ids[str(a.dir)] else b
        survivor = b if victim is a else a
        power_cut(victim.dir)
        hold.let_go()  # a worker may still run the held command: let it end
        first, interrupted = runs.read_text().split()
        ident = next((state / "bisects").iterdir())
        log = (ident / "bisect.log").read_text()
        assert [ln.split()[-1] for ln in log.splitlines() if ln.startswith(("git bisect good", "git bisect bad"))
                ] == [first]  # step 1 finished before the kill, step 2 did not

        # no restart: the survivor declares the silent master dead and takes the bisect over
        build = bisect_build(survivor, bsid, timeout=300)
        assert build["results"] == SUCCESS, build["state_string"]
        assert build["masterid"] == ids[str(survivor.dir)]
        assert f"first bad commit {shas[3][:12]}" in build["state_string"]
        steps = survivor.steps(build["buildid"])
        assert any("resumed" in (s["state_string"] or "") for s in steps), [s["state_string"] for s in steps]
        dead = [m for m in survivor.get("masters")["masters"] if m["masterid"] == ids[str(victim.dir)]]
        assert dead and not dead[0]["active"]
        # every poller and scheduler is the survivor's now (those of the dead one moved at the takeover)
        services = survivor.get("changesources")["changesources"] + survivor.get("schedulers")["schedulers"]
        assert {(x["master"] or {}).get("masterid") for x in services} == {ids[str(survivor.dir)]}, services
        result = json.loads((ident / "result.json").read_text())
        assert result["first_bad"]["sha"] == shas[3]
        wait_for(survivor.idle, 120, "the queue to drain")
        tested = runs.read_text().split()
        checks = [v["sha"] for v in result["verification"]]
        assert result["verified"] is True and checks and tested[-len(checks):] == checks, (tested, checks)
        steps_run = tested[:-len(checks)]
        assert steps_run.count(first) == 1  # no finished step repeated
        assert steps_run.count(interrupted) == 2, steps_run  # the interrupted step tested once more
        assert len(steps_run) == len(set(steps_run)) + 1  # and nothing else twice
        verdicts = [ln.split()[-1] for ln in (ident / "bisect.log").read_text().splitlines()
                    if ln.startswith("git bisect ") and not ln.startswith("git bisect start")]
        assert len(verdicts) == len(set(verdicts)) and interrupted in verdicts
        # the images the bisect built, published by either master into the one tree: each listed once
        listed = [i["sha"] for i in json.loads((tmp_path / "shared" / "images" / "index.json").read_text())["images"]]
        assert len(listed) == len(set(listed)) and set(tested) <= set(listed), (listed, tested)
    finally:
        hold.let_go()
        for w in workers.values():
            w.stop()
        for m in (a, b):
            m.stop()
    print(f"two masters, one killed mid-bisect: {time.monotonic() - t0:.0f}s")
