"""From the push of a bad head to the culprit mail, on a QEMU test machine with the real tiny kernel:
the regression watch's whole loop, timed, with nobody filling a form.

Setup (tests/farm/loop_farm.py, shared with tests/farm/test_loop_e2e.py; not counted): a real master and
worker over a shared clone of the prepared linux tree (scripts/prepare-linux-tree), tinyconfig +
configs/qemu-small.config; the ``[[test]]`` "boot" (mode boot) watches the branch on the QEMU machine
vm1; C0 is pushed, built and booted (pass).

Counted: the push of C<count> (``--count`` commits on top of C0, C<panic-at> planting a panic in
kernel_init) until the culprit mail reaches the SMTP server in this process: the pipeline builds the
head, the watch boots it (fail), re-runs it (fail), starts the bisect, which builds what it needs on
demand, boots each candidate, verifies the culprit and its parent; the mail reporter sends the mail.

Where the time went, as parts of the total (each instant counted once, in this order of precedence):
boot+test (the machine is running a test: image-test runs, bisect steps, verification), build (a kernel
build runs and the machine is idle), mail (from the end of the bisect build to the mail's arrival),
waiting (everything else: branch polling, scheduling, git, index updates).  Boots are counted from the
machine's console log (every kernel prints ``Linux version``): candidate kernels kexec'd, and stage-1
kernels (power-on or a reset after a panic).

Figures printed here come from this run only.  Reproduce:
    PYTHONPATH=. python bench/bench_loop.py [--count 8] [--panic-at 6] [--retries 0]
"""

from __future__ import annotations

import argparse
import calendar
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
# the farm's stage-1 kernel and ramfs: the checkout's cache, as the tests use (buildbot_kernel/resources.py)
os.environ.setdefault("BUILDBOT_KERNEL_CACHE", str(ROOT / ".cache"))

from farm.loop_farm import (  # noqa: E402
    BRANCH,
    LoopFarm,
    bisect_result,
    prepared_tree,
    unavailable,
    watch_bisects,
    watch_result,
)

from buildbot_kernel.farm.testing import stage1_artifacts  # noqa: E402
from buildbot_kernel.master.bisect_config import bisect_builder_name  # noqa: E402

GOAL = 300  # seconds, for a push of 8 commits on this 2-core machine


def epoch(iso: str) -> float:
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def union(spans) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def length(spans) -> float:
    return sum(b - a for a, b in union(spans))


def minus(spans, cut) -> list[tuple[float, float]]:
    """``spans`` without the parts covered by ``cut``."""
    out = []
    for a, b in union(spans):
        pos = a
        for c, d in union(cut):
            if d <= pos or c >= b:
                continue
            if c > pos:
                out.append((pos, c))
            pos = max(pos, d)
        if pos < b:
            out.append((pos, b))
    return out


def clip(spans, lo, hi):
    return [(max(a, lo), min(b, hi)) for a, b in spans if min(b, hi) > max(a, lo)]


def step_span(master, build, name):
    return next(((s["started_at"], s["complete_at"]) for s in master.steps(build["buildid"])
                 if s["name"] == name and s["started_at"] and s["complete_at"]), None)


def analyse(farm: LoopFarm, mailed: float) -> dict:
    master, t0 = farm.master, farm.pushed_at
    # the pipeline's builds of the branch and the bisect's on-demand ones (a builder of their own)
    builds = [b for name in (BRANCH, bisect_builder_name(BRANCH)) for b in master.builds(name)
              if b["started_at"] >= t0 - 1]
    build_spans = [(b["started_at"], b["complete_at"] or mailed) for b in builds]
    machine = []
    tests = [b for b in master.builds("image-test") if b["started_at"] >= t0 - 1]
    for b in tests:
        span = step_span(master, b, "test")
        if span:
            machine.append(span)
    [bisect] = watch_bisects(master)
    result = bisect_result(master, bisect)
    for s in result["steps"]:
        if s.get("image"):
            end = epoch(s["started"]) + s["seconds"]
            machine.append((end - s["test_seconds"], end))
    verify = step_span(master, bisect, "verify")
    if verify:  # a verification build inside it is build time, not the machine's
        machine += minus([verify], build_spans)
    lo = t0
    machine = clip(machine, lo, mailed)
    build_only = minus(clip(build_spans, lo, mailed), machine)
    mail = minus(minus([(bisect["complete_at"], mailed)], machine), build_only)
    total = mailed - t0
    parts = {"boot+test": length(machine), "build": length(build_only), "mail": length(mail)}
    parts["waiting"] = total - sum(parts.values())
    return {"total": total, "parts": parts, "builds": builds, "result": result,
            "head": watch_result(master, farm.shas[farm.count]),
            "build_seconds": sum(b["complete_at"] - b["started_at"] for b in builds if b["complete_at"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=8, help="commits pushed on top of the tested good head")
    ap.add_argument("--panic-at", type=int, default=6, help="the commit that plants the early panic")
    ap.add_argument("--retries", type=int, default=0, help="[[machine]] retries of a failed boot")
    ap.add_argument("--keep", action="store_true", help="keep the master directory and the clone")
    args = ap.parse_args()
    if not 1 <= args.panic_at <= args.count:
        ap.error(f"--panic-at must be within 1..{args.count}")
    reason = unavailable()
    if reason:
        sys.exit(f"cannot run: {reason}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    farm = LoopFarm(tmp, prepared_tree(), args.count, args.panic_at, retries=args.retries)
    try:
        t = time.monotonic()
        farm.start()
        setup = time.monotonic() - t
        farm.push_bad_head()
        mail = farm.culprit_mail(3600)
        a = analyse(farm, mail["at"])
        candidates, stage1 = farm.boots(stage1_artifacts().release)
    finally:
        farm.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result, shas = a["result"], farm.shas
    if result["status"] != "done" or result["first_bad"]["sha"] != shas[args.panic_at]:
        sys.exit(f"the bisect did not name C{args.panic_at}: {result['status']} {result['first_bad']}")
    subject = mail["msg"]["Subject"]
    if shas[args.panic_at][:12] not in subject:
        sys.exit(f"the mail does not name C{args.panic_at}: {subject}")
    builds = a["builds"]
    on_demand = sum(1 for b in builds if b["properties"].get("bisect_id"))  # the bisect's (marked on_demand)
    cancelled = sum(1 for b in builds if b["results"] not in (0, 1))
    bisect_tests = sum(1 for s in result["steps"] if s.get("image"))
    runs = 1 + ("rerun" in a["head"])
    print(f"push of {args.count} real-kernel commits on a tested good head (panic planted at C{args.panic_at}), "
          f"QEMU machine vm1 (retries={args.retries}), tinyconfig + qemu-small.config; setup (C0 built and "
          f"booted, not counted) {setup:.0f} s")
    print(f"push -> culprit mail: {a['total']:.0f} s (goal < {GOAL} s: {'met' if a['total'] < GOAL else 'NOT met'})")
    print(f"mail: {subject}")
    print(f"builds: {len(builds)} ({len(builds) - on_demand} by the pipeline, {on_demand} on demand by the bisect"
          f"{f', {cancelled} of them cancelled' if cancelled else ''}), {a['build_seconds']:.0f} s of building")
    print(f"boots: {candidates} candidate kernels kexec'd, {stage1} stage-1 boots (power-on or reset after a "
          f"panic); machine tests: {runs} of the head by the watch, {bisect_tests} bisect steps, "
          f"{len(result['verification'])} verification")
    print("where the time went: " + ", ".join(f"{k} {v:.0f} s ({100 * v / a['total']:.0f}%)"
                                              for k, v in a["parts"].items()))
    for s in result["steps"]:
        built = s.get("build") or {}
        print(f"  bisect step {s['n']}: C{shas.index(s['sha'])} {s['verdict']:4} build {built.get('seconds', 0):5.1f} s"
              f", boot+test {s.get('test_seconds', 0):5.1f} s")
    print("reproduce: PYTHONPATH=. python " + " ".join(shlex.quote(x) for x in sys.argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
