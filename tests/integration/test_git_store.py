"""One copy of the history per host, on a real master and worker: after the first build of three
branches and one bisect, the bisect mirror holds the objects and every other repository borrows it.

The fixture history is a few dozen commits of the fixture kernel tree on three branches; the bisect
finds a planted regression with missing images built on demand, so the branch builders' checkouts also
fetch revisions that are not branch heads.
"""

from __future__ import annotations

import json

import pytest

from .harness import FixtureRepo, Master, Worker, bisect_build, free_port, git, object_dirs, settings_text, wait_for
from .test_bisect import CHECK

pytestmark = pytest.mark.integration
BRANCHES = ("drm-intel-fixes", "drm-intel-next", "drm-tip")
SUCCESS = 0


def _history(repo: FixtureRepo, n: int) -> list[str]:
    shas = [repo.head(BRANCHES[0])]
    for i in range(1, n + 1):
        if i == n // 2:
            text = '/* fixture */\nconst char i915_state[] = "i915 REGRESSION";\nint i915_init(void) { return 0; }\n'
            shas.append(repo.commit_file(BRANCHES[0], "drivers/gpu/i915.c", text, f"drm/i915: change {i}"))
        else:
            text = "".join(f"int part{i}_{j}(void) {{ return {i * j}; }}\n" for j in range(40))
            shas.append(repo.commit_file(BRANCHES[0], f"drivers/gpu/part{i % 7}.c", text, f"drm/i915: change {i}"))
    return shas


def image_shas(master, branch) -> set[str]:
    d = master.dir / "images" / branch
    return {json.loads(m.read_text())["sha"] for m in d.glob("*/metadata.json")} if d.is_dir() else set()


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    base = tmp_path_factory.mktemp("store")
    repo = FixtureRepo(base, BRANCHES)
    shas = _history(repo, 10)
    git(repo.work, "push", "-q", "origin", f"{shas[-1]}:refs/heads/{BRANCHES[0]}")
    git(repo.work, "push", "-q", "-f", "origin", f"{shas[3]}:refs/heads/{BRANCHES[1]}")
    git(repo.work, "push", "-q", "-f", "origin", f"{shas[7]}:refs/heads/{BRANCHES[2]}")
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    # file://, not a plain path: a clone from a plain path copies or hard-links the objects and ignores
    # --reference, which no real remote (https, ssh, git) does
    master = Master(base, settings_text(repo.bare.as_uri(), BRANCHES, ports, max_builds=3))
    worker = Worker(base, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    worker.start()
    try:
        for branch, sha in zip(BRANCHES, (shas[-1], shas[3], shas[7]), strict=True):
            wait_for(lambda b=branch, s=sha: s in image_shas(master, b), 180, f"the head image of {branch}")
        bsid = master.force("bisect", {"target": BRANCHES[0], "tester": "local", "command": CHECK, "mode": "test",
                                       "build_missing": True, "build_config": "x86_64", "max_steps": 0,
                                       "good": shas[0], "bad": shas[-1]})
        build = bisect_build(master, bsid, timeout=240)
        wait_for(master.idle, 60, "the master to be idle")
        yield master, worker, build, shas
    finally:
        worker.stop()
        master.stop()


def test_the_history_is_stored_once(farm):
    master, worker, build, shas = farm
    assert build["results"] == SUCCESS
    assert build["properties"]["bisect_result"][0]["first_bad"]["sha"] == shas[5]
    store = master.dir / "state" / "bisect-mirrors" / "drm-intel.git"
    store_objects = str((store / "objects").resolve())
    poller = master.dir / "state" / "gitpoller" / "drm-intel"
    worker_store = worker.dir / "git-stores" / "drm-intel.git"
    assert (poller / "objects" / "info" / "alternates").read_text().split() == [store_objects]
    assert (worker_store / "objects" / "info" / "alternates").read_text().split() == [store_objects]
    checkouts = sorted(worker.dir.glob("*/work/src/.git"))
    assert len(checkouts) == 3  # one per branch builder
    for c in checkouts:
        assert (c / "objects" / "info" / "alternates").read_text().split() == [str((worker_store / "objects")
                                                                                   .resolve())]
    sizes = object_dirs(master.dir, worker.dir)
    total, own = sum(sizes.values()), sizes[store / "objects"]
    # the others hold what the store lacks (at most a fetch's worth) and git's empty-repository overhead
    others = total - own
    assert others < 0.1 * own + 16 * 1024 * (len(sizes) - 1), {str(k): v for k, v in sizes.items()}
    # and each of them resolves the whole history through its alternates
    for repo in [poller, worker_store, *checkouts]:
        assert git(repo, "cat-file", "-e", f"{shas[1]}^{{commit}}") == ""
