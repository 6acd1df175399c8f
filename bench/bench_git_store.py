"""Bytes of git objects on the master's host after the first build of three branches and one bisect.

A real master and worker (tests/integration/harness.py) on a generated history: the fixture kernel
tree plus N commits on drm-intel-fixes, drm-intel-next and drm-tip branching off at a third and two
thirds of it, served over file:// (a real transport: a plain path would make git hard-link objects).
Once every head has its image, one bisect (build missing commits, stopped after --bisect-steps steps:
enough to clone the mirror and check out non-head revisions) runs. Then ``du -sb`` of every git
``objects/`` directory under the master and the worker directories (the upstream and the developer's
clone, which are not the host's, are left out).

Run twice: "before" is the code of --before (a git revision of this repository, exported with ``git
archive``), "after" is this working tree.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration import harness  # noqa: E402

BRANCHES = ("drm-intel-fixes", "drm-intel-next", "drm-tip")
CHECK = '! grep -q REGRESSION "$BISECT_IMAGE_DIR/vmlinuz"'


class CodeMaster(harness.Master):
    """A harness master running the buildbot-kernel code found at ``code``."""

    def __init__(self, base: Path, settings: str, code: Path):
        self.code = code
        super().__init__(base, settings)
        # master.cfg is package data now (buildbot_kernel/data/); older revisions kept it at the top
        cfg = next(p for p in (code / "buildbot_kernel" / "data" / "master.cfg", code / "master.cfg") if p.exists())
        (self.dir / "master.cfg").write_text(cfg.read_text())

    @property
    def env(self):
        return {**super().env, "PYTHONPATH": str(self.code)}


def history(repo: harness.FixtureRepo, n: int) -> list[str]:
    shas = [repo.head(BRANCHES[0])]
    for i in range(1, n + 1):
        if i == n // 2:
            path, text = "drivers/gpu/i915.c", ('/* fixture */\nconst char i915_state[] = "i915 REGRESSION";\n'
                                                'int i915_init(void) { return 0; }\n')
        else:
            path = f"drivers/gpu/part{i % 13}.c"
            text = "".join(f"int part{i}_{j}(void) {{ return {(i * 7919 + j * 104729) % 1000003}; }}\n"
                           for j in range(60))
        shas.append(repo.commit_file(BRANCHES[0], path, text, f"drm/i915: change {i}"))
    return shas


def image_shas(master, branch) -> set[str]:
    d = master.dir / "images" / branch
    return {json.loads(m.read_text())["sha"] for m in d.glob("*/metadata.json")} if d.is_dir() else set()


def measure(code: Path, commits: int, steps: int, work: Path) -> tuple[dict[Path, int], float]:
    began = time.monotonic()
    repo = harness.FixtureRepo(work, BRANCHES)
    shas = history(repo, commits)
    heads = [shas[-1], shas[commits // 3], shas[2 * commits // 3]]
    for branch, sha in zip(BRANCHES, heads, strict=True):
        harness.git(repo.work, "push", "-q", "-f", "origin", f"{sha}:refs/heads/{branch}")
    ports = {"web": harness.free_port(), "worker": harness.free_port(), "image": harness.free_port()}
    master = CodeMaster(work, harness.settings_text(repo.bare.as_uri(), BRANCHES, ports, max_builds=3), code)
    worker = harness.Worker(work, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    worker.start()
    try:
        for branch, sha in zip(BRANCHES, heads, strict=True):
            harness.wait_for(lambda b=branch, s=sha: s in image_shas(master, b), 600, f"the image of {branch}")
        bsid = master.force("bisect", {"target": BRANCHES[0], "tester": "local", "command": CHECK, "mode": "test",
                                       "build_missing": True, "build_config": "x86_64", "max_steps": steps,
                                       "good": shas[0], "bad": shas[-1]})
        harness.bisect_build(master, bsid, timeout=1200)
        harness.wait_for(master.idle, 300, "the master to be idle")
    finally:
        worker.stop()
        master.stop()
    return harness.object_dirs(master.dir, worker.dir), time.monotonic() - began


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commits", type=int, default=300)
    p.add_argument("--bisect-steps", type=int, default=3, help="the bisect stops after this many steps")
    p.add_argument("--before", default="main", help="git revision whose code is measured as 'before'")
    args = p.parse_args(argv)
    if args.before.startswith("-"):
        p.error("--before: a git revision is expected")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "before-code"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        for label, code in (("before", old), ("after", ROOT)):
            work = tmp / label
            work.mkdir()
            sizes, took = measure(code, args.commits, args.bisect_steps, work)
            results[label] = ({str(k.relative_to(work)): v for k, v in sizes.items()}, took)

    print(f"git objects on the master's host: {args.commits}-commit history on {len(BRANCHES)} branches, "
          f"first build of each head, one bisect ({args.bisect_steps} steps, missing commits built)")
    for label, (sizes, took) in results.items():
        print(f"\n{label} ({'code of ' + args.before if label == 'before' else 'this tree'}, run took {took:.0f} s)")
        for path, size in sorted(sizes.items()):
            print(f"{size:>12,}  {path}")
        print(f"{sum(sizes.values()):>12,}  total")
    b, a = (sum(results[k][0].values()) for k in ("before", "after"))
    store = max(results["after"][0].values())
    print(f"\nafter / before: {a / b:.2f} ({b / a:.1f}x less); after / largest store: {a / store:.2f} copies")
    cmd = ["python", "bench/bench_git_store.py", "--commits", args.commits, "--bisect-steps", args.bisect_steps,
           "--before", args.before]
    print("command: " + " ".join(shlex.quote(str(c)) for c in cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
