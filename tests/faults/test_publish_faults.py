"""Faults 3 and 6: the master SIGKILLed between upload and publish; the image disk full during publish.

The image root is a small tmpfs of its own, so the test can watch every read on it (fanotify) and fill it.
The publish step's first read of the landed upload (the worker's checksum file under ``.incoming/``) is
held: at that moment the upload is complete on the master's disk and nothing is renamed into the tree yet.
"""

from __future__ import annotations

import json
import time

import pytest
from integration.harness import FixtureRepo, Master, Worker, free_port, settings_text, wait_for

from buildbot_kernel.imagetree import package
from buildbot_kernel.steps.publish import WORKER_SUMS

from .tools import ReadGate, TreeWatch, fill, image_dirs, index_names, power_cut, start_worker, tmpfs

pytestmark = [pytest.mark.integration, pytest.mark.faults]
BRANCH = "drm-intel-fixes"
SUCCESS, FAILURE, RETRY = 0, 2, 5


def reads_landed_upload(path: str, pid: int) -> bool:
    return "/.incoming/" in path and path.endswith("/" + WORKER_SUMS)


def snapshot(root) -> dict[str, int]:
    """Every file of the tree but the staging area and the test's filler, with its size."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).parts[0].startswith((".incoming", ".fill"))}


@pytest.fixture
def farm(tmp_path):
    repo = FixtureRepo(tmp_path, (BRANCH,))
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    master = Master(tmp_path, settings_text(str(repo.bare), (BRANCH,), ports))
    worker = Worker(tmp_path, "w1", "pw", ports["worker"])
    with tmpfs(master.dir / "images", "8m") as root:
        try:
            yield repo, master, worker, root, ports
        finally:
            worker.stop()
            master.stop()


def test_master_killed_between_upload_and_publish_lists_no_half_image(farm):
    t0 = time.monotonic()
    repo, master, worker, root, ports = farm
    with TreeWatch(root) as watch, ReadGate(root, reads_landed_upload) as gate:
        master.start(ports["web"])
        start_worker(worker, master)
        assert gate.held.wait(120), "the publish step never read the landed upload"
        staged = [p for p in (root / ".incoming").iterdir() if p.is_dir()]
        assert len(staged) == 1 and (staged[0] / "vmlinuz").is_file()  # the upload has landed ...
        assert not image_dirs(root)  # ... and nothing is in the tree
        power_cut(master.dir)
        gate.release()
        assert not image_dirs(root) and list((root / ".incoming").iterdir())  # the kill left the staging
    with TreeWatch(root) as watch2:
        master.start(ports["web"])
        wait_for(lambda: image_dirs(root) and master.idle(), 120, "the image after the restart")
    images = image_dirs(root)
    assert len(images) == 1 and package.verify_image_dir(images[0]) == []
    assert json.loads((images[0] / "metadata.json").read_text())["sha"] == repo.head(BRANCH)
    assert index_names(root) == [images[0].name]
    assert list((root / ".incoming").iterdir()) == []  # the start-up cleaned the staging away
    builds = master.builds(BRANCH)
    assert [b["results"] for b in builds] == [RETRY, SUCCESS], [b["state_string"] for b in builds]
    assert watch.problems == watch2.problems == [], (watch.problems + watch2.problems)[:5]
    print(f"fault 3 (master SIGKILL between upload and publish): {time.monotonic() - t0:.0f}s")


def test_image_disk_full_during_publish_fails_clearly_and_the_next_build_publishes(farm):
    t0 = time.monotonic()
    repo, master, worker, root, ports = farm
    master.start(ports["web"])
    start_worker(worker, master)
    wait_for(lambda: image_dirs(root) and master.idle(), 120, "the first image")
    before, index_before = snapshot(root), (root / "index.json").read_text()
    with TreeWatch(root) as watch, ReadGate(root, reads_landed_upload) as gate:
        repo.commit_file(BRANCH, "drivers/gpu/more.c", "int more(void) { return 2; }\n", "drm/i915: more")
        repo.push(BRANCH)
        assert gate.held.wait(120), "the publish step never read the landed upload"
        filler = fill(root / ".fill")  # the disk fills up while the upload is checked
        gate.release()
        wait_for(lambda: len(master.builds(BRANCH)) == 2 and master.idle(), 60, "the build to fail")
    build = master.builds(BRANCH)[-1]
    assert build["results"] == FAILURE
    assert f"no space left on the image disk: {root}" in build["state_string"], build["state_string"]
    publish = next(s for s in master.steps(build["buildid"]) if s["name"] == "publish")
    log = master.get(f"steps/{publish['stepid']}/logs/problems/contents")["logchunks"]
    assert "free space there" in "".join(c["content"] for c in log)  # says what to do
    assert snapshot(root) == before and (root / "index.json").read_text() == index_before  # tree as before
    assert list((root / ".incoming").iterdir()) == []  # no half image left in staging either
    assert watch.problems == []
    failed = repo.head(BRANCH)
    ledger = master.dir / "state" / "ledger.jsonl"
    assert all(json.loads(line)["sha"] != failed for line in ledger.read_text().splitlines())  # not the commit's
    filler.unlink()  # space freed: the next heads check builds the same commit and publishes it
    master.force("heads-now", {})
    wait_for(lambda: len(image_dirs(root)) == 2 and master.idle(), 120, "the image of the same commit")
    assert master.builds(BRANCH)[-1]["results"] == SUCCESS
    newest = next(d for d in image_dirs(root) if d.name not in {p.split("/")[1] for p in before if "/" in p})
    assert json.loads((newest / "metadata.json").read_text())["sha"] == failed
    assert package.verify_image_dir(newest) == []
    assert sorted(index_names(root)) == sorted(d.name for d in image_dirs(root))
    print(f"fault 6 (image disk full during publish): {time.monotonic() - t0:.0f}s")
