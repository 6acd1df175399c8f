"""Bisect wall time on one QEMU test machine: (a) every step through a full reboot (and, with
--build-cmd, a build from source first, as ktest does) vs (b) prebuilt images + kexec from the previous
candidate (the farm's normal path).  Also prints the per-step orchestration time beyond boot + test.

The range is RANGE "commits" with a planted first bad one. A binary search runs over it, and each step
boots a real kernel image (Debian's, under its own release name) and runs a test that passes or fails
according to the planted regression. (a) powers the VM off before each step, so each step goes through
the firmware and stage 1. (b) lets the machine, already polling from the previous candidate, kexec
straight into the next one.

Figures printed here come from this run only.  Reproduce:
    PYTHONPATH=. python bench/bench_kexec_bisect.py [--range 16] [--first-bad 11] [--build-cmd CMD]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from buildbot_kernel.farm.driver import MachineDriver
from buildbot_kernel.farm.qemu import QemuMachine
from buildbot_kernel.farm.registry import Registry
from buildbot_kernel.farm.testing import FarmServer, ReactorThread, stage1_artifacts, write_image


def bisect(lo_good: int, hi_bad: int, verdict_of) -> tuple[int, list[tuple[int, str]]]:
    """Plain binary search: commit ``lo_good`` is good, ``hi_bad`` is bad; returns first bad + steps."""
    steps = []
    while hi_bad - lo_good > 1:
        mid = (lo_good + hi_bad) // 2
        v = verdict_of(mid)
        steps.append((mid, v))
        if v == "bad":
            hi_bad = mid
        else:
            lo_good = mid
    return hi_bad, steps


def run(label, driver, vm, registry, entry, args, full_reboot: bool):
    events = []
    registry.subscribe(driver.name, lambda ev: events.append((ev.kind, ev.at)))
    per_step = []

    def verdict_of(commit: int) -> str:
        build = 0.0
        if full_reboot:
            if args.build_cmd:
                t = time.monotonic()
                subprocess.run(args.build_cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
                build = time.monotonic() - t
            vm.stop()  # power off: the step goes through firmware and stage 1
        events.clear()
        t0 = time.time()
        test = f"[ {commit} -lt {args.first_bad} ]"
        out = ReactorThread.call(driver.run_step, entry, test, "test")
        wall = time.time() - t0
        if out.uname != entry["name"] or out.verdict not in ("good", "bad"):
            sys.exit(f"{label}: step {commit} gave {out}")
        at = dict(events)
        machine = at["final"] - at["fetched"]  # download + kexec + boot + test + report
        per_step.append({"commit": commit, "wall": wall + build, "build": build, "machine": machine,
                         "orchestration": wall - machine, "boot": at["running"] - at["fetched"]})
        return out.verdict

    t = time.monotonic()
    first_bad, steps = bisect(0, args.range, verdict_of)
    total = time.monotonic() - t
    assert first_bad == args.first_bad, (first_bad, steps)
    return total, per_step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--range", type=int, default=16, help="commits in the range (first one good)")
    ap.add_argument("--first-bad", type=int, default=11)
    ap.add_argument("--build-cmd", default="", help="run before every (a) step, e.g. a kernel build")
    ap.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    args = ap.parse_args()
    s1 = stage1_artifacts()
    tmp = Path(tempfile.mkdtemp(prefix="bench-kexec-"))
    registry = Registry(["bench"], tmp / "state.json")
    server = FarmServer(tmp / "images", registry, poll={"bench": 1}, initrds={"bench": s1.ramfs})
    (tmp / "images").mkdir()
    server.start()
    vm = QemuMachine("bench", s1.kernel, s1.ramfs, server.guest_url(), tmp / "vm", accel=args.accel)
    machine = {"name": "bench", "boot_timeout": 120, "test_timeout": 60, "retries": 0, "poll": 1,
               "cmdline": "console=ttyS0 panic=5"}
    driver = MachineDriver(machine, registry, vm, server.guest_url(), public_base=server.url,
                           initrd=server.initrd_file("bench"))
    entry = write_image(tmp / "images", server.url, s1.release, s1.kernel)
    try:
        full, full_steps = run("(a)", driver, vm, registry, entry, args, full_reboot=True)
        kexec, kexec_steps = run("(b)", driver, vm, registry, entry, args, full_reboot=False)
    finally:
        vm.stop()
        server.stop()

    def avg(rows, k):
        return sum(r[k] for r in rows) / len(rows)

    cmd = "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"bisect of {args.range} commits (first bad {args.first_bad}), {len(kexec_steps)} steps, "
          f"QEMU accel={vm.accel}, candidate {s1.release}")
    print(f"(a) full reboot per step{' + build' if args.build_cmd else ''}: {full:7.1f} s "
          f"({avg(full_steps, 'wall'):.1f} s/step; build {avg(full_steps, 'build'):.1f} s/step"
          f"{'' if args.build_cmd else ' (no --build-cmd: build time not included)'})")
    print(f"(b) prebuilt images + kexec:  {kexec:7.1f} s ({avg(kexec_steps, 'wall'):.1f} s/step; "
          f"boot {avg(kexec_steps, 'boot'):.1f} s/step)")
    print(f"ratio (a)/(b): {full / kexec:.2f}x")
    print(f"orchestration beyond boot+test, per step: (b) mean {avg(kexec_steps, 'orchestration'):.2f} s, "
          f"max {max(r['orchestration'] for r in kexec_steps):.2f} s (machine poll interval 1 s)")
    print(f"reproduce: {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
