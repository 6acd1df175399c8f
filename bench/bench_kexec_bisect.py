"""Bisect wall time of a real-kernel range on one QEMU test machine: (a) as ktest does it, every step
built from source in a persistent tree and booted through a full reboot, vs (b) prebuilt images + kexec
straight from the previous candidate (the farm's normal path).  Also prints the per-step orchestration
time beyond boot + test.

The range: the prepared linux tree (scripts/prepare-linux-tree) + RANGE generated commits
(tests/farm/planted_history.py), commit FIRST_BAD planting a marker in the kernel log; build config
tinyconfig + configs/qemu-small.config.  Both arms run the same binary search over the same commits with
the same test (stage 2 greps dmesg for the marker) on the same VM:

(a) for each step: `git checkout` in one persistent tree, configure (the step's CONFIG_LOCALVERSION, so
    the kernel is named as the pipeline names it) and `make bzImage modules` in one persistent object
    directory (real incremental builds; the tree was built once at the range's first commit beforehand,
    not counted), then the VM is powered off and on: firmware, stage 1, fetch, kexec, candidate, test.
(b) the images (a) built, prebuilt so not counted; the machine is already polling from the previous
    candidate and kexecs straight into the next one.

Figures printed here come from this run only.  Reproduce:
    PYTHONPATH=. python bench/bench_kexec_bisect.py [--range 16] [--first-bad 11] [--accel auto]
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "realkernel"))

import kbuild_helper  # noqa: E402

from buildbot_kernel import naming  # noqa: E402
from buildbot_kernel.farm.driver import MachineDriver  # noqa: E402
from buildbot_kernel.farm.qemu import QemuMachine  # noqa: E402
from buildbot_kernel.farm.registry import Registry  # noqa: E402
from buildbot_kernel.farm.testing import FarmServer, ReactorThread, stage1_artifacts, write_image  # noqa: E402
from buildbot_kernel.settings import Machine  # noqa: E402
from tests.farm.planted_history import MARKER, make_history  # noqa: E402

BRANCH = "bench"
TEST = f'! dmesg | grep -q "{MARKER}"'


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


class Builder:
    """ktest's way: one persistent checkout and object directory, one incremental build per step."""

    def __init__(self, work: Path, obj: Path, images: Path, base_url: str):
        self.work, self.obj, self.images, self.base_url = work, obj, images, base_url
        self.entries: dict[str, dict] = {}

    def build(self, sha: str) -> tuple[dict, float]:
        """The image entry of ``sha`` (built now, in the persistent tree) and the build's seconds."""
        t = time.monotonic()
        subprocess.run(["git", "-C", str(self.work), "checkout", "-q", sha], check=True)
        date = int(subprocess.run(["git", "-C", str(self.work), "log", "-1", "--format=%ct", sha],
                                  capture_output=True, text=True, check=True).stdout)
        built = kbuild_helper.build_kernel(self.work, self.obj, naming.config_localversion(BRANCH, sha, date))
        entry = write_image(self.images, self.base_url, built.release, str(built.bzimage), branch=BRANCH, sha=sha)
        self.entries[sha] = entry
        return entry, time.monotonic() - t


def run_arm(label, driver, vm, registry, shas, first_bad, step_entry, full_reboot: bool):
    """One bisect; ``step_entry(sha)`` gives (image entry, seconds it took to get it)."""
    events = []

    def listen(ev):
        events.append((ev.kind, ev.at))

    registry.subscribe(driver.name, listen)
    per_step = []

    def verdict_of(i: int) -> str:
        entry, build = step_entry(shas[i])
        if full_reboot:
            vm.stop()  # power off: the step goes through the firmware and stage 1
        events.clear()
        t0 = time.time()
        out = ReactorThread.call(driver.run_step, entry, TEST, "test")
        wall = time.time() - t0
        if out.uname != entry["name"] or out.verdict not in ("good", "bad"):
            sys.exit(f"{label}: step C{i} gave {out}")
        at = dict(events)
        machine = at["final"] - at["fetched"]  # download + kexec + boot + test + report
        per_step.append({"commit": i, "wall": wall + build, "build": build, "machine": machine,
                         "orchestration": wall - machine, "boot": at["running"] - at["fetched"],
                         "to_machine": wall})
        return out.verdict

    t = time.monotonic()
    found, steps = bisect(0, len(shas) - 1, verdict_of)
    total = time.monotonic() - t
    registry.unsubscribe(driver.name, listen)
    if found != first_bad:
        sys.exit(f"{label}: found C{found}, planted C{first_bad} ({steps})")
    return total, per_step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--range", type=int, default=16, help="generated commits after the starting point")
    ap.add_argument("--first-bad", type=int, default=11, help="the commit that plants the regression")
    ap.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary tree, objects and images")
    args = ap.parse_args()
    if not 1 <= args.first_bad <= args.range:
        ap.error(f"--first-bad must be within 1..{args.range}")
    if kbuild_helper.source_tarball() is None:
        sys.exit("needs the Debian package linux-source-6.1 (scripts/install-deps)")
    tree = kbuild_helper.prepare_tree(kbuild_helper.DEFAULT_TREE)
    s1 = stage1_artifacts()
    tmp = Path(tempfile.mkdtemp(prefix="bench-kexec-"))
    work = tmp / "linux"
    shas = make_history(tree, work, BRANCH, args.range, {args.first_bad: "marker"})
    key = secrets.token_hex(16)  # every request under /machines/<name>/ carries the machine's key
    registry = Registry(["bench"], tmp / "state.json", keys={"bench": key})
    (tmp / "images").mkdir()
    server = FarmServer(tmp / "images", registry, poll={"bench": 1}, initrds={"bench": s1.ramfs})
    server.start()
    builder = Builder(work, tmp / "obj", tmp / "images", server.url)
    vm = QemuMachine("bench", s1.kernel, s1.ramfs, server.guest_url(), tmp / "vm", accel=args.accel, key=key)
    machine = Machine(name="bench", boot_timeout=120, test_timeout=60, retries=0, poll=1,
                      cmdline="console=ttyS0 panic=-1")
    driver = MachineDriver(machine, registry, vm, server.guest_url(), public_base=server.url,
                           initrd=server.initrd_file("bench"))
    try:
        _, first_build = builder.build(shas[0])  # the persistent tree's first build, not counted
        full, full_steps = run_arm("(a)", driver, vm, registry, shas, args.first_bad, builder.build,
                                   full_reboot=True)
        kexec, kexec_steps = run_arm("(b)", driver, vm, registry, shas, args.first_bad,
                                     lambda sha: (builder.entries[sha], 0.0), full_reboot=False)
    finally:
        vm.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    def avg(rows, k):
        return sum(r[k] for r in rows) / len(rows)

    cmd = "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"bisect of {args.range} real-kernel commits (first bad C{args.first_bad}), {len(kexec_steps)} steps "
          f"(C{', C'.join(str(r['commit']) for r in kexec_steps)}), QEMU accel={vm.accel}, tinyconfig + "
          f"qemu-small.config; persistent tree's first build {first_build:.0f} s (not counted)")
    print(f"(a) incremental build + full reboot per step: {full:7.1f} s ({avg(full_steps, 'wall'):.1f} s/step: "
          f"build {avg(full_steps, 'build'):.1f} s, reboot to report {avg(full_steps, 'to_machine'):.1f} s)")
    print(f"(b) prebuilt images + kexec:                  {kexec:7.1f} s ({avg(kexec_steps, 'wall'):.1f} s/step: "
          f"fetch+kexec+boot {avg(kexec_steps, 'boot'):.1f} s, fetch to report {avg(kexec_steps, 'machine'):.1f} s)")
    print(f"ratio (a)/(b): {full / kexec:.2f}x")
    print(f"orchestration beyond the machine's own fetch + boot + test + report, per step: (b) mean "
          f"{avg(kexec_steps, 'orchestration'):.2f} s, max {max(r['orchestration'] for r in kexec_steps):.2f} s "
          f"(goal <= 1 s; machine poll interval 1 s)")
    print(f"reproduce: {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
