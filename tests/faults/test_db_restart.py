"""Fault 7: the PostgreSQL server restarted (``pg_ctl restart -m fast``: every connection terminated) while
a branch build runs, then while a bisect's test runs.

History: C0 (good) - C1 - C2 - C3 (plants the regression) - C4 (the branch head, whose link the test holds).
The master builds C4 at start-up and is held at the link while the database restarts; then a bisect of
C0..C4 is held in its first test while the database restarts again.  Nothing may be lost: the image is
published and its build recorded, the bisect names C3 with its record whole.
"""

from __future__ import annotations

import json
import time

import pytest
from integration.harness import (
    FAKELINUX,
    FixtureRepo,
    Master,
    Worker,
    bisect_build,
    free_port,
    git,
    settings_text,
    wait_for,
)

from buildbot_kernel.imagetree import package

from .tools import Hold, holding_makefile, image_dirs, index_names, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.postgres]
BRANCH = "drm-intel-fixes"
CHECK = '! grep -q REGRESSION "$BISECT_IMAGE_DIR/vmlinuz"'
SUCCESS = 0


def test_database_restarted_mid_build_and_mid_bisect_loses_nothing(tmp_path, postgres):
    t0 = time.monotonic()
    repo = FixtureRepo(tmp_path, (BRANCH,))
    link = Hold(tmp_path, "link")
    shas = [repo.head(BRANCH)]
    for i in range(1, 5):
        if i == 3:
            path, text = "drivers/gpu/i915.c", ('/* fixture */\nconst char i915_state[] = "i915 REGRESSION";\n'
                                                'int i915_init(void) { return 0; }\n')
        elif i == 4:
            path, text = "Makefile", holding_makefile((FAKELINUX / "Makefile").read_text(), link)
        else:
            path, text = f"drivers/gpu/part{i}.c", f"int part{i}(void) {{ return {i}; }}\n"
        shas.append(repo.commit_file(BRANCH, path, text, f"drm/i915: change {i}"))
    git(repo.work, "push", "-q", "origin", BRANCH)
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    master = Master(tmp_path, settings_text(str(repo.bare), (BRANCH,), ports, max_builds=3,
                                            db_url=postgres.create_database("restart")), upgrade=True)
    worker = Worker(tmp_path, "w1", "pw", ports["worker"])
    root = master.dir / "images"
    test = Hold(tmp_path, "test")
    master.start(ports["web"])
    try:
        start_worker(worker, master)
        # 1. a branch build in the middle of its compile
        link.wait_reached(1)
        postgres.restart()
        link.release()
        wait_for(lambda: image_dirs(root) and master.idle(), 120, "the image after the database restart")
        [build] = [b for b in master.builds(BRANCH)]
        assert build["results"] == SUCCESS, build["state_string"]
        assert link.arrivals() == 1  # built once: nothing redone
        [image] = image_dirs(root)
        assert package.verify_image_dir(image) == []
        assert json.loads((image / "metadata.json").read_text())["sha"] == shas[4]
        assert index_names(root) == [image.name]

        # 2. a bisect in the middle of a test
        command = (f'if [ ! -e {test.log} ]; then echo reached >> {test.log}; read line < {test.fifo} || true; '
                   f'fi; {CHECK}')
        bsid = master.force("bisect", {"target": BRANCH, "tester": "local", "command": command, "mode": "test",
                                       "good": shas[0], "bad": shas[4], "build_missing": True,
                                       "build_config": "x86_64", "max_steps": 0})
        test.wait_reached(1, timeout=180)
        postgres.restart()
        test.release()
        build = bisect_build(master, bsid, timeout=240)
        assert build["results"] == SUCCESS, build["state_string"]
        assert f"first bad commit {shas[3][:12]}" in build["state_string"]
        ident = master.dir / "state" / "bisects" / build["properties"]["bisect_id"][0]
        result = json.loads((ident / "result.json").read_text())
        assert result["first_bad"]["sha"] == shas[3] and result["verified"] is True
        verdicts = [ln.split()[-1] for ln in (ident / "bisect.log").read_text().splitlines()
                    if ln.startswith(("git bisect good", "git bisect bad"))]
        assert len(verdicts) == len(set(verdicts)) >= 2
        wait_for(master.idle, 60, "the queue to drain")
        # what REST shows is what happened: the branch build still recorded, every bisect build finished
        assert [b["results"] for b in master.builds(BRANCH)] == [SUCCESS]
        assert all(b["complete"] for b in master.builds())
    finally:
        link.let_go()
        test.let_go()
        worker.stop()
        master.stop()
    print(f"fault 7 (PostgreSQL restarted mid-build and mid-bisect): {time.monotonic() - t0:.0f}s")
