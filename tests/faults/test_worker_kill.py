"""Fault 1: a worker SIGKILLed (with the build commands it runs) in the middle of a branch build.

The branch head's Makefile blocks its vmlinux link on a named pipe the test holds, so the kill lands with
the objects compiled and no image made, however slow the machine.  The tree is watched all along.
"""

from __future__ import annotations

import json
import time

import pytest
from integration.harness import FAKELINUX, FixtureRepo, Master, Worker, free_port, settings_text, wait_for

from buildbot_kernel.imagetree import package

from .tools import Hold, TreeWatch, holding_makefile, image_dirs, index_names, power_cut, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.faults]
BRANCH = "drm-intel-fixes"
SUCCESS, RETRY = 0, 5


def test_worker_killed_mid_build_builds_again_and_publishes_once(tmp_path):
    t0 = time.monotonic()
    repo = FixtureRepo(tmp_path, (BRANCH,))
    hold = Hold(tmp_path)
    head = repo.commit_file(BRANCH, "Makefile", holding_makefile((FAKELINUX / "Makefile").read_text(), hold),
                            "kbuild: a link step the test holds")
    repo.push(BRANCH)
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    master = Master(tmp_path, settings_text(str(repo.bare), (BRANCH,), ports))
    worker = Worker(tmp_path, "w1", "pw", ports["worker"])
    root = master.dir / "images"
    master.start(ports["web"])
    try:
        with TreeWatch(root) as watch:
            start_worker(worker, master)
            hold.wait_reached(1)  # compiled, blocked before the link
            assert not image_dirs(root)
            power_cut(worker.dir)
            wait_for(lambda: [b["results"] for b in master.builds(BRANCH)] == [RETRY], 60,
                     "the master to see the build lost")
            start_worker(worker, master)  # the worker comes back
            hold.wait_reached(2)
            hold.release()
            wait_for(lambda: image_dirs(root) and master.idle(), 90, "the image after the rebuild")
        builds = master.builds(BRANCH)
        assert [b["results"] for b in builds] == [RETRY, SUCCESS], [b["state_string"] for b in builds]
        assert hold.arrivals() == 2  # built once more, not twice more
        images = image_dirs(root)
        assert len(images) == 1
        assert package.verify_image_dir(images[0]) == []
        assert json.loads((images[0] / "metadata.json").read_text())["sha"] == head
        assert index_names(root) == [images[0].name]
        assert not list((root / ".incoming").iterdir())
        assert watch.problems == [] and watch.polls > 50, watch.problems[:5]
    finally:
        hold.let_go()
        worker.stop()
        master.stop()
    print(f"fault 1 (worker SIGKILL mid-build): {time.monotonic() - t0:.0f}s")
