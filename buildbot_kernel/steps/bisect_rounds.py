"""A bisect on a class of test machines: each round tests several candidates side by side.

With a tester naming a class of several ``[[machine]]`` s (README.md "Machine classes"), the bisect does
not hold one machine for its whole run.  Every round:

* counts the class's machines that are free now (their master lock is available), at most the request's
  ``max_machines`` (0: all of them), and asks the multisection engine
  (:mod:`buildbot_kernel.bisect.multisect`) for that many candidates;
* starts the builds of the round's candidates without an image all at once;
* tests each candidate as soon as its image exists, on the first machine of the class that is free,
  holding that machine's lock (the same lock a single-machine bisect and the regression watch take) for
  that one test only: a machine that finished is never held idle while another still tests;
* a machine that breaks (an infrastructure failure: never a verdict) drops out of the bisect, and its
  candidate goes to another machine of the class; only when every machine broke is the bisect aborted;
* records the round's verdicts in one write (replayable with ``git bisect replay``), then the next round.

The step reads ``round 2: 3 candidates: 1a2b3c4d5e6f good, ...``; each candidate is also a line of
``steps.jsonl`` with its ``round``, so result.json and the dashboard show the rounds.
"""

from __future__ import annotations

import time

from twisted.internet import defer, threads

from buildbot_kernel import buildbot_adapter as bb
from buildbot_kernel.bisect import report
from buildbot_kernel.bisect.engine import SKIP, BisectInputError, Build
from buildbot_kernel.bisect.multisect import Round
from buildbot_kernel.bisect.tester import TesterAbort
from buildbot_kernel.buildbot_adapter import named_service
from buildbot_kernel.farm.driver import lock_name
from buildbot_kernel.master.dashboard_data import build_link
from buildbot_kernel.master.farm_service import FARM_SERVICE
from buildbot_kernel.steps.bisect_testers import MachineTester, test_output
from buildbot_kernel.steps.subbuilds import Interrupted

EXCERPT_LINES = 20  # of the test's output, in the bisect step's log per candidate


class _Claim:
    """The owner of one machine lock claim (Buildbot locks know their owners by identity)."""


class MachinePool:
    """The test machines of one class as one tester: ``test(image, sha)`` runs on whichever is free.

    Same interface as the other testers (:mod:`buildbot_kernel.steps.bisect_testers`), so the culprit's
    verification uses it too.  ``free()`` says how many could start a test now."""

    def __init__(self, names: list[str], testers: dict, locks: dict, accesses: dict):
        self.names = list(names)
        self.testers = testers  # name -> MachineTester
        self.locks = locks  # name -> the real Buildbot lock
        self.accesses = accesses  # name -> its exclusive LockAccess
        self.dropped: dict[str, str] = {}  # broken machine -> why
        self.used: set[str] = set()  # machines that ran at least one test
        self.cancelled = False
        self._waiting: list = []  # (Deferred, its finisher) of acquire() calls waiting for a release

    @classmethod
    @defer.inlineCallbacks
    def open(cls, step, names: list[str], command: str, mode: str, owner: str):
        """Drivers from the master's farm and the machines' lock objects; BisectInputError-free: a farm
        that cannot answer raises, and the start step turns that into a ``tester`` error."""
        farm = named_service(step.master, FARM_SERVICE)
        if farm is None:
            raise RuntimeError("no test farm runs in this master")
        testers, locks, accesses = {}, {}, {}
        for name in names:
            driver = yield defer.maybeDeferred(farm.driver, name)
            testers[name] = MachineTester(driver, command, mode, owner, owner_build=step.build.buildid)
            accesses[name] = bb.master_lock(lock_name(name))
            locks[name] = yield bb.real_lock(step, accesses[name])
        return cls(names, testers, locks, accesses)

    def alive(self) -> list[str]:
        return [n for n in self.names if n not in self.dropped]

    def free(self) -> int:
        return sum(1 for n in self.alive() if self.locks[n].isAvailable(_Claim(), self.accesses[n]))

    def _try_claim(self):
        for name in self.alive():  # settings order: the same machines first, so they stay warm
            claim = _Claim()
            if self.locks[name].isAvailable(claim, self.accesses[name]):
                self.locks[name].claim(claim, self.accesses[name])
                return name, claim
        return None

    def acquire(self) -> defer.Deferred:
        """Fires with (machine, claim) once a machine of the class is free, or None when none is left
        (all broke, or the bisect was stopped)."""
        if not self.alive() or self.cancelled:
            return defer.succeed(None)
        got = self._try_claim()
        if got is not None:
            return defer.succeed(got)
        d = defer.Deferred()
        subs = []

        def done(result):
            for s in subs:
                s.unsubscribe()
            self._waiting[:] = [w for w in self._waiting if w[0] is not d]
            d.callback(result)

        def released():
            if d.called:
                return
            got = self._try_claim() if self.alive() and not self.cancelled else None
            if got is None and self.alive() and not self.cancelled:
                return  # another waiter (a queued bisect, a test) took it: wait for the next release
            done(got)

        subs.extend(self.locks[n].subscribeToReleases(released) for n in self.alive())
        self._waiting.append((d, done))
        return d

    def cancel(self, reason: str) -> None:
        """The bisect was stopped: nothing waiting for a machine starts a test any more (a running machine
        step runs to its own timeout, as with :class:`MachineTester`)."""
        self.cancelled = True
        for _, done in list(self._waiting):
            done(None)

    def release(self, name: str, claim) -> None:
        self.locks[name].release(claim, self.accesses[name])

    @defer.inlineCallbacks
    def test(self, image, sha: str):
        """(verdict, details) from the first free machine; a machine that breaks drops out and the next
        free one tests; TesterAbort when every machine of the class broke."""
        while True:
            got = yield self.acquire()
            if got is None and self.cancelled:
                raise Interrupted("the bisect build was stopped")
            if got is None:
                raise TesterAbort(-1, "every machine of the class is broken: " + "; ".join(
                    f"{n}: {why}" for n, why in self.dropped.items()))
            name, claim = got
            self.used.add(name)
            began = time.time()
            try:
                verdict, details = yield self.testers[name].test(image, sha)
            except TesterAbort as e:
                self.dropped[name] = str(e)
                continue
            finally:
                self.release(name, claim)
            return verdict, {**details, "tester": name, "test_started": report.now_iso(began),
                             "machine_seconds": round(time.time() - began, 1)}


@defer.inlineCallbacks
def test_round(step, run, rstep: Round, first_n: int):
    """Builds and tests of one round, side by side; the round's step records (no verdict recorded yet)."""
    started = time.time()
    lines: dict[str, str] = {}

    def progress(sha: str, text: str) -> None:
        lines[sha] = text
        step.show(f"round {step.n}: {len(rstep.steps)} candidates: " + ", ".join(
            f"{report.short(s.sha)} {lines.get(s.sha, 'waiting')}" for s in rstep.steps))

    @defer.inlineCallbacks
    def one(i: int, cand):
        t0 = time.time()
        built = None
        sha = cand.sha
        rec = {"n": first_n + i, "round": step.n, "sha": sha, "image": None,
               "started": report.now_iso(t0)}
        handle = None
        if isinstance(cand, Build):
            progress(sha, "building")
            handle = run.start_build(step, sha, "on-demand build of")
            bt = time.time()
            results = yield run.waiter.wait(handle.wait())
            built = {"sha": sha, "results": results, "seconds": round(time.time() - bt, 1), "buildset": handle.bsid}
            yield run.waiter.wait(run.refresh())
        image = run.has_image(sha)
        if image is None:
            progress(sha, "build failed: skip")
            rec = {**rec, "verdict": SKIP, "build": built, "reason": "the build failed: no image",
                   "seconds": round(time.time() - t0, 1)}
            yield annotate(step, rec, handle)
            return rec
        step.addURL(f"image {image.name}", image.url)
        progress(sha, "testing")
        tt = time.time()
        try:
            verdict, details = yield run.waiter.wait(run.tester.test(image, sha))
        except TesterAbort as e:  # every machine of the class broke: no verdict
            progress(sha, "untested")
            return {**rec, "image": image.name, "verdict": None, "build": built, "reason": str(e)}
        progress(sha, verdict)
        rec = {**rec, "image": image.name, "verdict": verdict, "build": built, **details,
               "test_seconds": round(time.time() - tt, 1), "seconds": round(time.time() - t0, 1)}
        yield annotate(step, rec, handle)
        return rec

    results = yield defer.DeferredList([one(i, c) for i, c in enumerate(rstep.steps)], consumeErrors=True)
    recs, errors = [], []
    for ok, value in results:
        (recs if ok else errors).append(value)
    for f in errors:  # an interrupt first: the round is resumed after a restart
        if f.check(Interrupted):
            f.raiseException()
    if errors:
        errors[0].raiseException()
    return recs, time.time() - started


@defer.inlineCallbacks
def open_pool(step, names: list[str], request, bisect_id: str):
    """The class's machines as one tester; a farm that cannot serve them is a ``tester`` input error."""
    try:
        return (yield MachinePool.open(step, names, request.command, request.mode, owner=f"bisect {bisect_id}"))
    except KeyError as e:
        raise BisectInputError("tester", str(e.args[0]) if e.args else str(e)) from None
    except Exception as e:  # no farm, or it could not be set up (no stage-1 kernel, no QEMU, ...)
        raise BisectInputError("tester", f"the test farm is not available for class {request.tester!r}: {e}") \
            from None


@defer.inlineCallbacks
def annotate(step, rec: dict, handle=None):
    """Links from the bisect step to the builds behind a verdict (the image's on-demand build, the local
    tester's test build) into ``rec`` and the step's URLs, and the test's output excerpt as a step log."""
    www = step.master.config.buildbotURL
    sha = report.short(rec["sha"])
    if handle is not None:
        build = yield handle.last_build()
        if build:
            rec["build_url"] = build_link(www, build)
            step.addURL(f"build {sha}", rec["build_url"])
    out = rec.get("log_tail") or ""  # a machine's report
    if rec.get("test_build"):
        build = yield step.master.data.get(("builds", rec["test_build"]))
        if build:
            rec["test_build_url"] = build_link(www, build)
            step.addURL(f"test {sha}: {rec['verdict']}", rec["test_build_url"])
        out = yield test_output(step.master, rec["test_build"])
    lines = out.rstrip("\n").splitlines()[-EXCERPT_LINES:]
    head = f"{rec['sha']} {rec.get('image') or '(no image)'}: {rec['verdict']}"
    if rec.get("reason"):
        head += f" ({rec['reason']})"
    yield step.addCompleteLog(f"{sha} {rec['verdict']}", head + "\n" + "".join(f"{x}\n" for x in lines))


@defer.inlineCallbacks
def record_round(run, recs: list[dict]):
    """The round's verdicts into the bisect log (one write), then its lines into steps.jsonl."""
    ordered = yield threads.deferToThread(run.session.record_round, [(r["sha"], r["verdict"]) for r in recs])
    applied = dict(ordered)  # contradicting verdicts are recorded as skips
    for r in recs:
        if applied.get(r["sha"]) != r["verdict"]:
            r["recorded"] = applied.get(r["sha"])
        yield threads.deferToThread(run.dir.append_step, r)
    return ordered
