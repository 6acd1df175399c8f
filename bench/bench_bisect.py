"""Bisect builder policies on a generated 1,000-commit history: steps, builds and modelled wall time.

Real engine calls on a real git repository (fast-import), with a cost model for the parts that take
minutes in real life: a kernel build costs B seconds, a test T seconds. Policies:

  (a) build every step           no prebuilt images: every midpoint is built, then tested
  (b) prebuilt + on-demand       images on every k-th commit (as the branch builders leave them); the
                                 engine tests an image when one splits well enough, else builds git's
                                 midpoint (one worker, build then test)
  (c) (b) + ahead builds         as (b), and while a commit is being tested, the two possible next
                                 midpoints that lack images are built on free workers; the one the
                                 verdict rules out is cancelled (its worker time counts as wasted)

Multisection (k test machines of one class): each round tests up to k commits side by side; the
round's missing images are built in parallel (one build time B per round that builds anything), then
its tests run in parallel (T). Figures for k = 1, 2, 3, 4, 8 under (a) and (b); k = 1 is the engine
above, step by step. The goal figure: rounds with 3 machines at most 0.55x the rounds with one.

Each planted regression (culprit) is one bisection from the root (good) to the tip (bad); figures are
means over the culprits. The engine's own time per step (git rev-list calls, the decision) is measured
and printed separately; it is not part of the modelled wall time.

Headline (modelled): policy (b) with 3 machines against (a) on one machine where every step also pays a
full reboot (``--reboot-time``: what bench/bench_kexec_bisect.py measures as "reboot to report" minus the
kexec test) -- ktest's way against the farm's.

``--real``: besides the model, a real run on a real-kernel range (the prepared linux tree plus
``--range`` generated commits, tests/farm/planted_history.py, a marker planted at ``--first-bad``): the
same bisection with one QEMU machine (k = 1, the engine step by step) and with two QEMU machines side by
side (k = 2, multisection rounds), both with prebuilt images (built before, not counted, as
bench_kexec_bisect.py's arm (b)) and kexec between candidates.  The goal: two machines at least 1.4x
faster than one.  Reproduce: ``PYTHONPATH=. python bench/bench_bisect.py --real`` (needs
linux-source-6.1 and QEMU, scripts/install-deps; minutes).
"""

from __future__ import annotations

import argparse
import random
import secrets
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from buildbot_kernel.bisect.engine import Build, Done, Test, next_step, prefetch, start_bisect  # noqa: E402
from buildbot_kernel.bisect.multisect import Round, next_round, record_round  # noqa: E402
from tests.bisect.history import make_history, with_merges  # noqa: E402


@dataclass
class Outcome:
    tests: int = 0
    builds: int = 0  # builds started, ahead ones included
    wasted: int = 0  # ahead builds cancelled because the verdict ruled them out
    wall: float = 0.0  # modelled seconds
    engine_s: float = 0.0  # measured seconds inside engine calls
    engine_calls: int = 0
    found: str | None = None
    rounds: int = 0


@dataclass
class Workers:
    """Build workers: each is busy until some time; a job runs on the first one free."""

    n: int
    busy_until: list[float] = field(default_factory=list)
    job: list[str | None] = field(default_factory=list)

    def __post_init__(self):
        self.busy_until = [0.0] * self.n
        self.job = [None] * self.n

    def start(self, sha: str, now: float, duration: float) -> float:
        w = min(range(self.n), key=lambda i: self.busy_until[i])
        begin = max(now, self.busy_until[w])
        self.busy_until[w], self.job[w] = begin + duration, sha
        return begin + duration

    def cancel(self, sha: str, now: float) -> None:
        for w in range(self.n):
            if self.job[w] == sha and self.busy_until[w] > now:
                self.busy_until[w], self.job[w] = now, None


def bisect(h, culprit: int, prebuilt: set[str], build_s: float, test_s: float, ahead: bool, workers: int,
           min_split: float) -> Outcome:
    out = Outcome()
    state = start_bisect(h.path, [h.shas[0]], h.shas[-1])
    verdict = h.oracle(culprit)
    images = set(prebuilt)
    in_flight: dict[str, float] = {}  # sha -> finish time of its build
    pool = Workers(workers if ahead else 1)
    now = 0.0

    def timed(fn, *args, **kw):
        began = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            out.engine_s += time.perf_counter() - began
            out.engine_calls += 1

    while True:
        for sha, finish in list(in_flight.items()):  # finished builds are published images
            if finish <= now:
                images.add(sha)
                del in_flight[sha]
        has_image = {s: s for s in images}.get
        step = timed(next_step, state, has_image, allow_build=True, min_split=min_split)
        if isinstance(step, Build):
            if step.sha not in in_flight:  # not built ahead: build it now
                in_flight[step.sha] = pool.start(step.sha, now, build_s)
                out.builds += 1
            now = max(now, in_flight.pop(step.sha))
            images.add(step.sha)
            continue
        if not isinstance(step, Test):
            assert isinstance(step, Done), step
            out.found, out.wall = step.sha, now
            return out
        nxt = None
        if ahead:  # while this test runs, build both possible next midpoints
            nxt = timed(prefetch, state, step.sha, has_image, min_split)
            for sha in nxt.shas():
                if sha not in in_flight:
                    in_flight[sha] = pool.start(sha, now, build_s)
                    out.builds += 1
        now += test_s
        out.tests += 1
        v = verdict(step.sha)
        timed(state.record, step.sha, v)
        ruled_out = {"good": nxt and nxt.if_bad, "bad": nxt and nxt.if_good}.get(v)
        if ruled_out and in_flight.get(ruled_out, 0.0) > now:  # still building: cancel (done: keep the image)
            pool.cancel(ruled_out, now)
            del in_flight[ruled_out]
            out.wasted += 1


def multisect(h, culprit: int, prebuilt: set[str], build_s: float, test_s: float, machines: int,
              min_split: float) -> Outcome:
    """One bisection with ``machines`` testers: a round costs B (when it builds) + T."""
    out = Outcome()
    state = start_bisect(h.path, [h.shas[0]], h.shas[-1])
    verdict = h.oracle(culprit)
    images = set(prebuilt)
    while True:
        began = time.perf_counter()
        step = next_round(state, {s: s for s in images}.get, machines, allow_build=True, min_split=min_split)
        out.engine_s += time.perf_counter() - began
        out.engine_calls += 1
        if not isinstance(step, Round):
            assert isinstance(step, Done), step
            out.found = step.sha
            return out
        builds = [s.sha for s in step.steps if isinstance(s, Build)]
        images.update(builds)
        out.builds += len(builds)
        out.tests += len(step.steps)
        out.rounds += 1
        out.wall += (build_s if builds else 0.0) + test_s
        record_round(state, [(sha, verdict(sha)) for sha in step.shas])


def real_run(args) -> dict:
    """One and two QEMU machines on the same real-kernel range (see the module docstring); figures."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_kexec_bisect as kexec  # its Builder (a persistent tree, incremental builds) and kbuild_helper
    from twisted.internet import defer

    from buildbot_kernel.farm.driver import MachineDriver
    from buildbot_kernel.farm.qemu import QemuMachine
    from buildbot_kernel.farm.registry import Registry
    from buildbot_kernel.farm.testing import FarmServer, ReactorThread, stage1_artifacts
    from buildbot_kernel.settings import Machine
    from tests.farm.planted_history import make_history as real_history

    if kexec.kbuild_helper.source_tarball() is None:
        sys.exit("--real needs the Debian package linux-source-6.1 (scripts/install-deps)")
    tree = kexec.kbuild_helper.prepare_tree(kexec.kbuild_helper.DEFAULT_TREE)
    s1 = stage1_artifacts()
    tmp = Path(tempfile.mkdtemp(prefix="bench-bisect-real-"))
    shas = real_history(tree, tmp / "linux", kexec.BRANCH, args.range, {args.first_bad: "marker"})
    names = ["bench1", "bench2"]
    keys = {n: secrets.token_hex(16) for n in names}  # every request under /machines/<name>/ carries it
    registry = Registry(names, tmp / "state.json", keys=keys)
    (tmp / "images").mkdir()
    server = FarmServer(tmp / "images", registry, poll=dict.fromkeys(names, 1), initrds=dict.fromkeys(names, s1.ramfs))
    server.start()
    builder = kexec.Builder(tmp / "linux", tmp / "obj", tmp / "images", server.url)
    vms = {n: QemuMachine(n, s1.kernel, s1.ramfs, server.guest_url(), tmp / "vm", memory=512, accel=args.accel,
                          key=keys[n]) for n in names}
    drivers = {n: MachineDriver(Machine(name=n, boot_timeout=120, test_timeout=60, retries=0, poll=1,
                                        cmdline="console=ttyS0 panic=-1"), registry, vms[n], server.guest_url(),
                                public_base=server.url, initrd=server.initrd_file(n)) for n in names}
    culprit = shas[args.first_bad]
    oracle = {sha: ("bad" if i >= args.first_bad else "good") for i, sha in enumerate(shas)}

    def rounds(k: int, test) -> list[list[tuple[str, str]]]:
        state = start_bisect(str(tmp / "linux"), [shas[0]], shas[-1])
        out = []
        while True:
            step = next_round(state, lambda sha: sha, k)  # every commit has its image (built below)
            if not isinstance(step, Round):
                assert isinstance(step, Done) and step.sha == culprit, (k, step)
                return out
            verdicts = test(step.shas)
            record_round(state, verdicts)
            out.append(verdicts)

    def boot_all(pairs):  # the round's tests side by side, one per machine
        return defer.gatherResults([drivers[n].run_step(builder.entries[sha], kexec.TEST, "test")
                                    for n, sha in pairs])

    def on_machines(shas_of_round):
        outs = ReactorThread.call(boot_all, list(zip(names, shas_of_round, strict=False)))
        for sha, o in zip(shas_of_round, outs, strict=True):
            if o.verdict not in ("good", "bad") or o.uname != builder.entries[sha]["name"]:
                sys.exit(f"--real: {sha[:12]} gave {o}")
        return [(sha, o.verdict) for sha, o in zip(shas_of_round, outs, strict=True)]

    try:
        needed = {sha for k in (1, 2) for r in rounds(k, lambda ss: [(s, oracle[s]) for s in ss]) for sha, _ in r}
        builder.build(shas[0])  # the persistent tree's first build; then the images both arms test
        build_s = {sha: builder.build(sha)[1] for sha in sorted(needed, key=shas.index)}  # incremental, timed
        on_machines([shas[0]] * 2)  # both machines booted once into stage 2 (not counted): both warm
        figures = {}
        for k in (1, 2):
            t = time.monotonic()
            done = rounds(k, on_machines)
            figures[k] = {"seconds": time.monotonic() - t, "rounds": len(done), "tests": sum(map(len, done))}

        def after_power_off(shas_of_round):
            vms[names[0]].stop()  # power off: the test goes through the firmware and stage 1
            return on_machines(shas_of_round)

        t = time.monotonic()  # ktest's way: the one-machine bisect with a full reboot per step, plus the
        done = rounds(1, after_power_off)  # incremental build of each tested commit (timed above)
        built = sum(build_s[sha] for r in done for sha, _ in r)
        figures["reboot"] = {"seconds": time.monotonic() - t + built, "build_seconds": built, "tests": len(done)}
    finally:
        for vm in vms.values():
            vm.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    figures["range"], figures["accel"] = args.range, next(iter(vms.values())).accel
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commits", type=int, default=1000)
    p.add_argument("--every", type=int, default=10, help="prebuilt image on every k-th commit for (b), (c)")
    p.add_argument("--build-time", type=float, default=180.0, help="B: seconds per kernel build")
    p.add_argument("--test-time", type=float, default=15.0, help="T: seconds per test (boot + run)")
    p.add_argument("--workers", type=int, default=2, help="build workers available for ahead builds in (c)")
    p.add_argument("--culprits", type=int, default=25, help="planted regressions, one bisection each")
    p.add_argument("--min-split", type=float, default=0.5, help="engine rule: image split vs git's midpoint")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--machines", default="1,2,3,4,8", metavar="LIST",
                   help="test machines per round to compare (multisection; empty: none)")
    p.add_argument("--sweep", default="0,0.25,0.5,0.75,1", metavar="LIST",
                   help="min_split values to compare under policy (b) (empty: no sweep)")
    p.add_argument("--reboot-time", type=float, default=30.0,
                   help="seconds a full reboot adds to a test in the headline's build-every-step + reboot")
    p.add_argument("--real", action="store_true", help="also run the real-kernel range on 1 and 2 QEMU machines")
    p.add_argument("--range", type=int, default=8, help="--real: generated commits after the starting point")
    p.add_argument("--first-bad", type=int, default=6, help="--real: the commit that plants the regression")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"), help="--real: QEMU accelerator")
    args = p.parse_args(argv)
    if args.real and not 1 <= args.first_bad <= args.range:
        p.error(f"--first-bad must be within 1..{args.range}")

    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        h = make_history(Path(tmp) / "repo", with_merges(args.commits, seed=args.seed))
        gen_s = time.perf_counter() - began
        merges = sum(1 for ps in h.parents if len(ps) == 2)
        in_range = sorted(h.ancestors(len(h) - 1) - {0})
        rng = random.Random(args.seed)
        culprits = sorted(rng.sample(in_range, args.culprits))
        prebuilt = {h.shas[i] for i in range(0, len(h), args.every)}
        policies = {
            "(a) build every step": dict(prebuilt=set(), ahead=False),
            f"(b) every {args.every}th + on demand": dict(prebuilt=prebuilt, ahead=False),
            "(c) (b) + ahead builds": dict(prebuilt=prebuilt, ahead=True),
        }
        results = {}
        for name, kw in policies.items():
            runs = [bisect(h, c, kw["prebuilt"], args.build_time, args.test_time, kw["ahead"], args.workers,
                           args.min_split) for c in culprits]
            for c, r in zip(culprits, runs, strict=True):
                assert r.found == h.shas[c], f"{name}: wrong culprit for {c}"
            results[name] = runs
        ks = [int(x) for x in args.machines.split(",") if x.strip()]
        multi = {}
        for label, pre in (("(a)", set()), ("(b)", prebuilt)):
            for k in ks:
                runs = [multisect(h, c, pre, args.build_time, args.test_time, k, args.min_split) for c in culprits]
                for c, r in zip(culprits, runs, strict=True):
                    assert r.found == h.shas[c], f"{label} k={k}: wrong culprit for {c}"
                multi[label, k] = runs
        # the headline's slow end: one machine, every step built, every test after a full reboot
        rebooting = [bisect(h, c, set(), args.build_time, args.test_time + args.reboot_time, False, 1,
                            args.min_split) for c in culprits]
        every = set(h.shas)  # every commit has an image (as in --real and bench_kexec_bisect.py's arm (b))
        all_imaged = [multisect(h, c, every, args.build_time, args.test_time, 3, args.min_split) for c in culprits]
        sweep = {}
        for ms in [float(x) for x in args.sweep.split(",") if x.strip()]:
            sweep[ms] = [bisect(h, c, prebuilt, args.build_time, args.test_time, False, 1, ms)
                         for c in culprits]

    print(f"bisect benchmark: {len(h)}-commit generated history ({merges} merges, made in {gen_s:.2f} s), "
          f"{len(culprits)} planted regressions, good = root, bad = tip")
    print(f"cost model: build B = {args.build_time:g} s, test T = {args.test_time:g} s; prebuilt images on "
          f"every {args.every}th commit for (b)/(c); {args.workers} build workers for ahead builds; "
          f"min_split = {args.min_split:g}")
    print("all runs found the planted commit\n")
    names = list(results)
    base_wall = statistics.mean(r.wall for r in results[names[0]])
    def mean(rs, attr):
        return statistics.mean(getattr(r, attr) for r in rs)

    def per(rs, attr, by):
        return 1000 * sum(getattr(r, attr) for r in rs) / sum(getattr(r, by) for r in rs)

    rows = [
        ("tests (mean)", lambda rs: f"{mean(rs, 'tests'):.1f}"),
        ("builds started (mean)", lambda rs: f"{mean(rs, 'builds'):.1f}"),
        ("  of which cancelled", lambda rs: f"{mean(rs, 'wasted'):.1f}"),
        ("modelled wall time (mean)", lambda rs: _duration(mean(rs, "wall"))),
        ("  min .. max", lambda rs: f"{_duration(min(r.wall for r in rs))} .. "
                                    f"{_duration(max(r.wall for r in rs))}"),
        ("wall time ratio to (a)", lambda rs: f"{mean(rs, 'wall') / base_wall:.2f}"),
        ("speed-up over (a)", lambda rs: f"{base_wall / mean(rs, 'wall'):.1f}x"),
        ("engine time per call (measured)", lambda rs: f"{per(rs, 'engine_s', 'engine_calls'):.1f} ms"),
        ("engine time per test step", lambda rs: f"{per(rs, 'engine_s', 'tests'):.1f} ms"),
    ]
    width = max(len(n) for n in names) + 2
    print(f"{'':34}" + "".join(f"{n:>{width}}" for n in names))
    for label, fmt in rows:
        print(f"{label:34}" + "".join(f"{fmt(results[n]):>{width}}" for n in names))
    if sweep:
        print("\nmin_split under (b): an image must split at least min_split x as well as git's midpoint")
        print(f"{'min_split':>10}{'tests':>8}{'builds':>8}{'wall (mean)':>13}")
        for ms, rs in sweep.items():
            wall = _duration(mean(rs, "wall"))
            print(f"{ms:>10g}{mean(rs, 'tests'):>8.1f}{mean(rs, 'builds'):>8.1f}{wall:>13}")
    if multi:
        print("\nmultisection: k test machines of one class, k commits per round (builds of a round in parallel)")
        print(f"{'policy':>8}{'k':>4}{'rounds':>9}{'x k=1':>7}{'tests':>8}{'builds':>8}{'wall (mean)':>13}"
              f"{'speed-up over (a) k=1':>23}{'engine ms/round':>17}")
        for (label, k), rs in multi.items():
            one = mean(multi[label, ks[0]], "rounds")
            print(f"{label:>8}{k:>4}{mean(rs, 'rounds'):>9.2f}{mean(rs, 'rounds') / one:>7.2f}"
                  f"{mean(rs, 'tests'):>8.1f}{mean(rs, 'builds'):>8.1f}{_duration(mean(rs, 'wall')):>13}"
                  f"{base_wall / mean(rs, 'wall'):>22.1f}x{per(rs, 'engine_s', 'engine_calls'):>17.1f}")
        if ("(a)", 1) in multi and ("(a)", 3) in multi:
            ratio = mean(multi["(a)", 3], "rounds") / mean(multi["(a)", 1], "rounds")
            print(f"goal: rounds with 3 machines <= 0.55x one machine: {ratio:.2f}x "
                  f"({'met' if ratio <= 0.55 else 'NOT met'})")
    slow = mean(rebooting, "wall")
    print(f"\nheadline (modelled, k = 3 machines): one machine building every step, each test after a full reboot "
          f"(+{args.reboot_time:g} s): {_duration(slow)}")
    if ("(b)", 3) in multi:
        fast = mean(multi["(b)", 3], "wall")
        print(f"  vs 3 machines, images on every {args.every}th commit + on demand: {_duration(fast)} "
              f"({slow / fast:.1f}x)")
    fast = mean(all_imaged, "wall")
    print(f"  vs 3 machines, every commit with an image (kexec, no build): {_duration(fast)} ({slow / fast:.1f}x; "
          f"goal >= 20x: {'met' if slow / fast >= 20 else 'NOT met'})")
    if args.real:
        real = real_run(args)
        one, two = real[1], real[2]
        print(f"\nreal run: {real['range']} real-kernel commits (first bad C{args.first_bad}), prebuilt images, "
              f"kexec, QEMU accel={real['accel']}, in one run:")
        for k, r in ((1, one), (2, two)):
            print(f"  {k} machine{'s' if k > 1 else ' '}: {r['rounds']} rounds, {r['tests']} tests, "
                  f"{r['seconds']:.1f} s")
        ratio = one["seconds"] / two["seconds"]
        print(f"  two machines vs one: {ratio:.2f}x faster (goal >= 1.4x: {'met' if ratio >= 1.4 else 'NOT met'})")
        slow = real["reboot"]
        print(f"  one machine, each step built incrementally ({slow['build_seconds']:.1f} s in all) and booted "
              f"through a full reboot: {slow['seconds']:.1f} s: {slow['seconds'] / two['seconds']:.1f}x the two "
              f"machines' time (measured)")
    cmd = [f"{Path(sys.executable).name}", "bench/bench_bisect.py", "--commits", args.commits, "--every",
           args.every, "--build-time", f"{args.build_time:g}", "--test-time", f"{args.test_time:g}",
           "--workers", args.workers, "--culprits", args.culprits, "--min-split", f"{args.min_split:g}",
           "--seed", args.seed, "--sweep", args.sweep, "--machines", args.machines,
           "--reboot-time", f"{args.reboot_time:g}"]
    if args.real:
        cmd += ["--real", "--range", args.range, "--first-bad", args.first_bad, "--accel", args.accel]
    print("\ncommand: " + " ".join(shlex.quote(str(c)) for c in cmd))
    return 0


def _duration(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


if __name__ == "__main__":
    sys.exit(main())
