"""Clean vs incremental real-kernel build through the pipeline, and commit -> published latency.

Starts a real master and worker (as the integration tests do) on Debian's linux-source-6.1 made into a
git repository, build config tinyconfig + configs/qemu-small.config.  The worker gets an empty
CCACHE_DIR, so the first build is truly clean; then a one-file commit is pushed and the time until its
image is published is measured.  Goal: incremental <= 10% of clean.

``--config defconfig-i915`` builds the real-size kernel instead: x86_64 ``defconfig`` plus
configs/i915-debug.config (i915 as a module with its debug and self-test options), and the one-file commit
touches an i915 source file.  That takes tens of minutes on a small machine: a benchmark, not a test.

    .venv/bin/python bench/bench_pipeline.py [--config tiny|defconfig-i915] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "realkernel")]

import kbuild_helper  # noqa: E402
from integration.harness import Master, Worker, free_port, git, settings_text, wait_for  # noqa: E402

BRANCH = "linux-6.1.y"
CONFIGS = {  # name -> (make target, fragment, the file the one-file commit touches)
    "tiny": ("tinyconfig", "qemu-small.config", "drivers/net/dummy.c"),
    "defconfig-i915": ("defconfig", "i915-debug.config", "drivers/gpu/drm/i915/i915_driver.c"),
}


def published(master):
    d = master.dir / "images" / BRANCH
    return {p.name: json.loads((p / "metadata.json").read_text())
            for p in d.iterdir() if (p / "metadata.json").exists()} if d.is_dir() else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one, removed)")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="tiny", help="which kernel to build")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each build (default 3600)")
    args = ap.parse_args()
    tree = kbuild_helper.prepare_tree(kbuild_helper.DEFAULT_TREE)
    base = Path(args.keep or tempfile.mkdtemp(prefix="bench-pipeline-"))
    base.mkdir(parents=True, exist_ok=True)
    upstream = base / "linux.git"
    subprocess.run(["git", "clone", "-q", "--shared", "--bare", str(tree), str(upstream)], check=True)
    git(upstream, "branch", "-f", BRANCH, "HEAD")
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    target, fragment, touched = CONFIGS[args.config]
    config = REPO / "configs" / fragment
    text = settings_text(str(upstream), [BRANCH], ports, poll=1).replace(
        'config = "defconfig"\n', f'config = "{target}"\nfragments = ["{config}"]\n')
    master = Master(base, text)
    worker = Worker(base, "w1", "pw", ports["worker"])
    os.environ["CCACHE_DIR"] = str(base / "ccache")  # the worker inherits it: a cold cache
    t0 = time.monotonic()
    master.start(ports["web"])
    worker.start()
    try:
        wait_for(lambda: published(master) and master.idle(), args.timeout, "the clean build")
        clean_wall = time.monotonic() - t0
        [first] = published(master).values()
        work = base / "dev"
        subprocess.run(["git", "clone", "-q", "--shared", "-b", BRANCH, str(upstream), str(work)], check=True)
        f = work / touched
        f.write_text(f.read_text() + "\n/* bench: one-file change */\n")
        git(work, "commit", "-q", "-am", "bench: touch one file")
        pushed = time.monotonic()
        git(work, "push", "-q", "origin", BRANCH)
        wait_for(lambda: len(published(master)) == 2, args.timeout, "the incremental image")
        latency = time.monotonic() - pushed
        second = [m for m in published(master).values() if m["sha"] != first["sha"]][0]
    finally:
        worker.stop()
        master.stop()
    clean, incr = first["build_seconds"], second["build_seconds"]
    print(f"real kernel {first['name'].split('-')[0]} {target}+{fragment}, {os.cpu_count()} cpus")
    print(f"  clean build (cold ccache, new tree)      {clean:8.1f} s   (master start -> published {clean_wall:.1f} s)")
    print(f"  incremental build (one-file commit)      {incr:8.1f} s")
    print(f"  incremental / clean                      {incr / clean:8.1%}   (goal <= 10%)")
    print(f"  commit pushed -> image published         {latency:8.1f} s   (poll interval 1 s)")
    for label, meta in (("clean", first), ("incremental", second)):
        image = master.dir / "images" / BRANCH / meta["name"]
        sizes = {p.name: p.stat().st_size for p in image.iterdir() if p.is_file()}
        print(f"  {label} image files: " + ", ".join(f"{n} {s / 1e6:.1f} MB" for n, s in sorted(sizes.items())))
    print(f"command: .venv/bin/python bench/{Path(__file__).name} --config {args.config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
