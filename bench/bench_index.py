"""Benchmark: index regeneration and sha lookup on a tree of N fixture images (goal <= 1 s, <= 1 ms).

Generates the tree once under .cache/bench-index-<N>/ (reused by later runs), then measures:
  cold  - a fresh TreeIndex without a saved cache: reads every manifest, writes every index file;
  restart - a fresh TreeIndex that loads the cache a previous process saved (`buildbot-kernel index`,
          a master restart): stats every image, writes the root index files;
  warm  - the regeneration after one more image is published (what the master does after each build);
  idle  - a regeneration with nothing changed (what a spurious watchdog event costs);
  lookup - ShaLookup.find over index.json with full shas and 7-digit prefixes (mean per lookup).
Every branch has a recorded head and history order (.state/heads.json, as the master writes it), so
the regenerations include ordering each branch by its history and marking its head.
Usage: python bench/bench_index.py [--images 10000] [--branches 10] [--tree DIR]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from buildbot_kernel.imagetree import branchorder  # noqa: E402
from buildbot_kernel.imagetree.index import CACHE, TreeIndex  # noqa: E402
from buildbot_kernel.imagetree.indexfile import read_index  # noqa: E402
from buildbot_kernel.imagetree.lookup import ShaLookup  # noqa: E402
from buildbot_kernel.imagetree.testing import fake_sha, make_image  # noqa: E402


def build_tree(root: Path, images: int, branches: int) -> None:
    marker = root / ".state" / "bench-complete"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t = time.perf_counter()
    for i in range(images):
        make_image(root, f"branch-{i % branches}", i)
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(str(images))
    print(f"generated {images} images in {time.perf_counter() - t:.1f} s under {root}")


def record_heads(root: Path, images: int, branches: int) -> None:
    """Each branch's head = its newest fixture commit, its history = all its commits, newest first."""
    for b in range(branches):
        history = [fake_sha(f"branch-{b}-{i}") for i in reversed(range(b, images, branches))]
        branchorder.update(root, f"branch-{b}", branchorder.make_state(f"branch-{b}", history[0], history))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--branches", type=int, default=10)
    ap.add_argument("--tree", type=Path, default=None)
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    root = args.tree or repo / ".cache" / f"bench-index-{args.images}"
    print("command:", shlex.join([sys.executable, *sys.argv]))
    build_tree(root, args.images, args.branches)
    # a previous run's extra image goes, so every run measures the same tree
    for d in root.glob("branch-0/*"):
        if d.is_dir() and (d / ".bench-extra").exists():
            shutil.rmtree(d)

    record_heads(root, args.images, args.branches)
    cache = root / CACHE
    if cache.exists():
        cache.unlink()
    idx = TreeIndex(root, "http://localhost:8011")
    cold, res = timed(idx.regenerate)
    assert len(res.images) == args.images, (len(res.images), res.skipped)
    save, _ = timed(idx.save_cache)
    for name in ("index.json", "index.html"):
        (root / name).unlink()  # so the restarted index has to write everything again
    restart_idx = TreeIndex(root, "http://localhost:8011")
    restart, res_restart = timed(lambda: (restart_idx.load_cache(), restart_idx.regenerate())[1])
    assert len(res_restart.images) == args.images
    idle, res_idle = timed(idx.regenerate)
    extra = make_image(root, "branch-0", args.images + 1)
    (extra / ".bench-extra").touch()
    warm, res_warm = timed(idx.regenerate)
    assert len(res_warm.images) == args.images + 1

    entries = read_index(root).entries()
    lookup = ShaLookup(entries)
    shas = [e["sha"] for e in entries]
    probes = shas[:: max(1, len(shas) // 2000)]
    t = time.perf_counter()
    for s in probes:
        lookup.find(s)
        lookup.find(s[:7])
    per_lookup = (time.perf_counter() - t) / (2 * len(probes))
    build_lookup, _ = timed(lambda: ShaLookup(read_index(root).entries()))

    size = os.path.getsize(root / "index.json")
    print(f"images: {args.images} on {args.branches} branches; index.json {size / 1e6:.1f} MB")
    print(f"regeneration cold (new process, no saved cache, all files written): {cold * 1000:.0f} ms")
    print(f"regeneration after a restart (saved cache loaded, {len(res_restart.written)} files written): "
          f"{restart * 1000:.0f} ms  (goal <= 1000 ms); saving the cache: {save * 1000:.0f} ms")
    print(f"regeneration warm (after one publish, {len(res_warm.written)} files written): "
          f"{warm * 1000:.0f} ms  (goal <= 1000 ms)")
    print(f"regeneration idle (nothing changed, {len(res_idle.written)} files written): {idle * 1000:.0f} ms")
    print(f"sha lookup: {per_lookup * 1e6:.1f} us per lookup (goal <= 1000 us); "
          f"reading index.json and building the lookup: {build_lookup * 1000:.1f} ms")
    return 0 if max(restart, warm) <= 1.0 and per_lookup <= 0.001 else 1


if __name__ == "__main__":
    sys.exit(main())
