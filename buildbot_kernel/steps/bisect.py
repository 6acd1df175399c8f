"""The "bisect" builder's steps: start (or resume) a bisect, one Buildbot step per bisect step, the result.

The engine (:mod:`buildbot_kernel.bisect`) decides; these steps only do what it asks, off the reactor
thread for git and the disk:

* ``start``: checks the request (a bad field fails this step with the field named and writes nothing),
  fetches the master's mirror clone, starts the session, or resumes it from the bisect log when this
  build request is a retry after a master restart (same buildset, same bisect id). On a resume, the
  test requests the dead build left in the queue are cancelled (their bisect-test builds refuse to run
  anyway, :mod:`buildbot_kernel.steps.bisect_test`): the interrupted step is tested once more, by the
  resumed bisect.
* ``step-N``: one engine step. A missing image is built on the branch's bisect build builder (Triggerable
  scheduler; published for everyone, marked ``on_demand``); a failed build is a skip. The test runs through the
  tester; while it runs and a build worker is free, both possible next midpoints are built ahead and the
  one the verdict makes useless is cancelled. Each finished step appends a line to steps.jsonl, after the
  verdict is in the bisect log.
* ``verify``: a first bad commit is tested again (must be bad) and its first parent (must be good,
  built if it has no image) before anything is reported; a contradiction ends the bisect as "flaky"
  and names no culprit (docs/bisect.md, "Culprit verification").
* ``result``: the summary naming the culprit, links to its image and the last good one, result.json and
  bisect.log as logs and files under ``<state>/bisects/<id>/``.

A master shutdown interrupts the running step with RETRY, so Buildbot puts the build request back and
runs it again after the restart; the verdicts already in the log are not repeated.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from buildbot.process import buildstep
from buildbot.process.results import CANCELLED, FAILURE, RETRY, SKIPPED, SUCCESS, WARNINGS
from twisted.internet import defer, threads
from twisted.python import failure

from buildbot_kernel import buildbot_adapter as bb
from buildbot_kernel import settings
from buildbot_kernel.bisect import records, report
from buildbot_kernel.bisect.engine import BAD, GOOD, SKIP, BisectInputError, Build, Done, Test, Unresolved, start_bisect
from buildbot_kernel.bisect.engine import remaining_candidates as engine_remaining
from buildbot_kernel.bisect.mirror import mirror_to_resume, update_mirror
from buildbot_kernel.bisect.request import FIELDS, BisectRequest, Target, parse_request
from buildbot_kernel.bisect.session import BisectSession
from buildbot_kernel.bisect.tester import TesterAbort
from buildbot_kernel.bisect.tree_images import TreeImages
from buildbot_kernel.master.auth import may_run_command
from buildbot_kernel.steps.bisect_rounds import MachinePool, annotate, open_pool, record_round, test_round
from buildbot_kernel.steps.bisect_testers import make_tester
from buildbot_kernel.steps.publish import ON_DEMAND_PROPERTY
from buildbot_kernel.steps.subbuilds import Interrupted, SubBuild, Waiter, cancel_requests, orphaned_requests


@dataclass
class BisectContext:
    """What the master configuration gives every bisect build."""

    targets: list[Target]
    builds: list[str]
    machines: list[str]  # tester names a bisect may give: machines and machine classes
    state_dir: str
    images_root: str
    base_url: str
    build_schedulers: dict[str, str]  # target (branch builder name) -> its Triggerable scheduler
    test_scheduler: str
    build_workers: list[str] = field(default_factory=list)
    tests: list[settings.Test] = field(default_factory=list)  # the named [[test]]s
    auth: settings.Auth | None = None  # None: no [auth], everyone is admin (loopback only)
    classes: dict[str, list[str]] = field(default_factory=dict)  # tester name -> its machines (settings order)

    def class_machines(self, tester: str) -> list[str]:
        """The machines a bisect on ``tester`` may use: several for a class, else one (or none: local)."""
        return list(self.classes.get(tester, [tester] if tester in self.machines else []))

    def target(self, builder: str) -> Target:
        return next(t for t in self.targets if t.builder == builder)


class BisectRun:
    """One bisect while its build runs; the steps of the build share it (the build's shared state, ``run``)."""

    def __init__(self, ctx: BisectContext, request: BisectRequest, bdir: records.BisectDir,
                 session: BisectSession | None, tester):
        self.ctx = ctx
        self.request = request
        self.dir = bdir
        self.session = session
        self.tester = tester
        self.images = TreeImages(ctx.images_root, ctx.base_url, repository=request.repository)
        self.index = None
        self.inflight: dict[str, SubBuild] = {}
        self.waiter = Waiter()
        self.end: tuple | None = None  # (status, engine step or reason)
        self.verification: list[dict] = []  # the culprit's and its parent's re-tests (VerifyCulprit)
        self.started = time.time()

    # -- off the reactor thread ------------------------------------------------------------------------
    def has_image(self, sha: str):
        return self.index.lookup(sha, self.request.build_config) if self.index else None

    def _refresh(self):
        self.index = self.images.index()
        return self.index

    def refresh(self) -> defer.Deferred:
        return threads.deferToThread(self._refresh)

    def _next_step(self):
        step = self.session.next_step(self.has_image, allow_build=self.request.build_missing)
        self._update_pins()
        return step

    def next_step(self) -> defer.Deferred:
        return threads.deferToThread(self._next_step)

    def _next_round(self, machines: int):
        step = self.session.next_round(self.has_image, machines, allow_build=self.request.build_missing)
        self._update_pins()
        return step

    def next_round(self, machines: int) -> defer.Deferred:
        return threads.deferToThread(self._next_round, machines)

    def round_size(self) -> int:
        """Candidates for the next round: the class's free machines, at most max_machines and the tests
        max_steps leaves; at least one (the round then waits for the first machine that frees up)."""
        k = self.tester.free()
        if self.request.max_machines:
            k = min(k, self.request.max_machines)
        if self.request.max_steps:
            k = min(k, self.request.max_steps - self.tests_done())
        return max(1, k)

    def _update_pins(self):
        """Images of every commit still in range, and of the ones tested: the rest of this bisect
        and its result links need them."""
        state = self.session.state
        shas = {c.sha for c in state.candidates()} | {s for s, _ in state.history} | set(state.goods)
        self.dir.set_pins(img.name for img in (self.has_image(s) for s in shas) if img is not None)

    def record(self, sha: str, verdict: str) -> defer.Deferred:
        return threads.deferToThread(self.session.record, sha, verdict)

    def tests_done(self) -> int:
        return sum(1 for s in self.dir.steps() if s.get("image"))

    # -- builds ----------------------------------------------------------------------------------------
    def start_build(self, step, sha: str, why: str) -> SubBuild:
        handle = self.inflight.get(sha)
        if handle is not None and not handle.cancelled:  # an ahead build of this commit: wait for it
            return handle
        t = self.ctx.target(self.request.target)
        ss = [{"codebase": "", "repository": t.url, "branch": t.branch, "revision": sha, "project": t.repository}]
        handle = SubBuild.trigger(step, self.ctx.build_schedulers[t.builder], f"build {sha[:12]}", ss,
                                  {"bisect_id": self.dir.id, "bisect_revision": sha, ON_DEMAND_PROPERTY: True},
                                  reason=f"bisect {self.dir.id}: {why} {sha[:12]}")
        self.inflight[sha] = handle
        return handle

    def free_slots(self, master, own_builder: str) -> defer.Deferred:
        """Build slots of connected build workers not taken by a running or queued build (a queued
        bisect, waiting for its machine's lock, runs on the control worker and takes none)."""
        return bb.free_build_slots(master, self.ctx.build_workers, own_builder, default_max_builds=2)

    # -- the end ---------------------------------------------------------------------------------------
    def _result(self) -> dict:
        self._refresh()
        state, repo = self.session.state, self.session.state.repo
        status, what = self.end
        steps = self.dir.steps()
        first_bad, candidates, reason = None, [], ""
        if status == report.FLAKY:
            candidates, reason = [what[0]], what[1]
        elif status == report.DONE:
            info = repo.commit_info(what.sha)
            first_bad = {"sha": info.sha, "subject": info.subject, "author": info.author, "date": info.date,
                         **self._image_ref(info.sha)}
            candidates = [info.sha]
        elif status == report.UNRESOLVED:
            candidates, reason = list(what.candidates), what.reason
        else:
            candidates, reason = list(engine_remaining(state)), what
        goods = [s for s in steps if s.get("verdict") == GOOD] or [{"sha": g} for g in state.goods]
        last_good = next((g for g in reversed(goods) if self.has_image(g["sha"])), goods[-1])
        last_good = {"sha": last_good["sha"], "subject": repo.subject(last_good["sha"]),
                     **self._image_ref(last_good["sha"])}
        return report.result_document(self.dir.id, self.request.to_json(), status, steps, first_bad=first_bad,
                                      candidates=candidates, reason=reason, last_good=last_good,
                                      started=self.started, finished=time.time(),
                                      verification=self.verification, built=list(self.inflight),
                                      machines=sorted(getattr(self.tester, "used", ())))

    def _image_ref(self, sha: str) -> dict:
        img = self.has_image(sha)
        return {"image": img.name, "image_url": img.url} if img else {"image": None, "image_url": None}

    def result(self) -> defer.Deferred:
        return threads.deferToThread(self._result)


class _BisectStep(buildstep.BuildStep):
    """Shared: a one-line summary for the step (and, when ``build_summary``, for the build)."""

    build_summary = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.title = ""
        self.stop_reason = None

    def show(self, text: str) -> None:
        self.title = text
        self.updateSummary()

    def getCurrentSummary(self):
        return {"step": self.title or "running"}

    def getResultSummary(self):
        out = {"step": self.title or "finished"}
        if self.build_summary and self.title:
            out["build"] = self.title
        return out

    def interrupt(self, reason):
        self.stop_reason = reason
        run = bb.build_state(self.build).get("run")
        if run is not None:
            run.waiter.interrupt(str(reason))
            for handle in list(run.inflight.values()):
                handle.cancel("the bisect build was stopped")
            run.tester.cancel("the bisect build was stopped")
        return super().interrupt(reason)

    def ended(self, run: BisectRun, step) -> bool:
        """The engine's answer (a step, a round, Done or Unresolved) ends the bisect, or max_steps does:
        says so in the step and sets ``run.end``; a found culprit is verified next."""
        limit = run.request.max_steps
        if not (isinstance(step, (Done, Unresolved)) or (limit and run.tests_done() >= limit)):
            return False
        run.end = ((report.DONE, step) if isinstance(step, Done) else
                   (report.UNRESOLVED, step) if isinstance(step, Unresolved) else
                   (report.MAX_STEPS, f"stopped after max_steps={limit} tests"))
        self.show("no more steps: " + ("first bad commit found" if isinstance(step, Done)
                                       else "range proven as far as possible" if run.end[0] == report.UNRESOLVED
                                       else f"max_steps={limit} reached"))
        if isinstance(step, Done):
            bb.add_steps_after_current(self.build, [VerifyCulprit()])
        return True

    def stop_results(self, reason) -> int:
        """RETRY when the master is shutting down (the request is put back and resumes), else CANCELLED."""
        shutting = bb.shutting_down(self.master)
        return RETRY if shutting or isinstance(reason, failure.Failure) else CANCELLED


class StartBisect(_BisectStep):
    name = "start"
    haltOnFailure = True

    def __init__(self, ctx: BisectContext, **kwargs):
        self.ctx = ctx
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        ctx = self.ctx
        req = bb.first_request(self.build)
        bdir = records.BisectDir(ctx.state_dir, records.bisect_id(req.bsid, req.submittedAt or time.time()))
        self.setProperty("bisect_id", bdir.id, "bisect")
        created = False
        try:
            resumed = bdir.exists
            if resumed:
                try:
                    request = BisectRequest.from_json(bdir.request())
                except (OSError, ValueError, KeyError, TypeError) as e:  # torn or edited by hand
                    raise BisectInputError("request", f"{records.REQUEST} of {bdir.id} cannot be read: {e}") from None
            else:
                props = {f: self.getProperty(f) for f in FIELDS if self.getProperty(f) is not None}
                request = parse_request(props, ctx.targets, ctx.builds, ctx.machines, ctx.tests)
                if not request.test and not may_run_command(ctx.auth, self.getProperty("owner")):
                    raise BisectInputError("command", "a free-form command is accepted from admins only; "
                                           "choose a named test")
            run = BisectRun(ctx, request, bdir, None, None)
            pool = ctx.class_machines(request.tester)
            if len(pool) > 1:  # a class: its machines side by side, each locked for one test at a time
                run.tester = yield open_pool(self, pool, request, bdir.id)
            else:
                run.tester = yield make_tester(self, request.with_tester(pool[0]) if pool else request, bdir.id,
                                               ctx.test_scheduler, run.images.local_dir)
            self.show(f"fetching {request.url}")
            mirror_log = yield self.addLog("mirror")  # git's progress: a first clone takes minutes

            def progress(line: str) -> None:  # called in the git thread
                self.master.reactor.callFromThread(mirror_log.addStdout, line + "\n")

            mirror = yield threads.deferToThread(mirror_to_resume if resumed else update_mirror, ctx.state_dir,
                                                 request.repository, request.url, progress)
            if resumed and bdir.file(records.LOG).is_file():
                run.session = yield threads.deferToThread(BisectSession.resume, mirror, bdir.file(records.LOG))
            else:
                yield threads.deferToThread(start_bisect, mirror, request.good, request.bad)  # writes nothing
                bdir.create(request.to_json())
                created = True
                run.session = yield threads.deferToThread(BisectSession.start, mirror, request.good, request.bad,
                                                          bdir.file(records.LOG))
        except BisectInputError as e:
            if created:
                bdir.remove()
            elif resumed:  # it cannot go on: it ends, said, instead of showing "running" and pinning images
                yield threads.deferToThread(bdir.end_unresumable, f"cannot resume: {e.field}: {e.message}")
            yield self.addCompleteLog("input error", f"{e.field}: {e.message}\n")
            self.build_summary = True
            self.show(f"refused: {e.field}: {e.message}")
            return FAILURE
        bb.build_state(self.build)["run"] = run
        run.started = bdir.file(records.REQUEST).stat().st_mtime
        state = run.session.state
        yield self.addCompleteLog("request", json.dumps(request.to_json(), indent=1) + "\n")
        n = state.steps_done + 1
        if isinstance(run.tester, MachinePool):
            n = run.session.rounds + 1
            bb.add_steps_after_current(self.build, [BisectMachineRound(n)])
        else:
            bb.add_steps_after_current(self.build, [BisectRound(n)])
        left = len(state.candidates())
        verb = f"resumed {bdir.id} at step {n}" if resumed else f"bisect {bdir.id}"
        on = (f" on class {request.tester} ({', '.join(run.tester.names)})"
              if isinstance(run.tester, MachinePool) else "")
        self.show(f"{verb}{on}: bad {report.short(state.bad)}, good {' '.join(report.short(g) for g in state.goods)}; "
                  f"{left} candidates, about {report.steps_left_estimate(left)} steps")
        return SUCCESS


    @defer.inlineCallbacks
    def _cancel_orphaned_tests(self, bisect_id: str):
        orphans = yield orphaned_requests(self.master, bisect_id, "bisect_sha", self.build.buildid)
        if orphans:
            cancel_requests(self.master, [brid for brid, _ in orphans],
                            "the bisect build that asked for this test ended; the resumed bisect asks again")
            yield self.addCompleteLog("orphans", "".join(
                f"cancelled build request {brid}: a test asked for by the ended build id {parent}\n"
                for brid, parent in orphans))


class _NumberedRound(_BisectStep):
    """Shared by the bisect's numbered steps: the name ``<label>-<n>``, and an interrupted round ends as
    the master's state asks (:meth:`_BisectStep.stop_results`)."""

    label = "step"

    def __init__(self, n: int, **kwargs):
        self.n = n
        kwargs.setdefault("name", f"{self.label}-{n}")
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        run: BisectRun = bb.build_state(self.build)["run"]
        try:
            return (yield self._round(run))
        except Interrupted as e:
            self.show(f"{self.title or f'{self.label} {self.n}'}: interrupted ({e})")
            return self.stop_results(self.stop_reason)


class BisectRound(_NumberedRound):
    """One bisect step: build the commit if it has no image, test it, record the verdict."""

    @defer.inlineCallbacks
    def _round(self, run: BisectRun):
        t0 = time.time()
        built = None
        while True:
            yield run.waiter.wait(run.refresh())
            step = yield run.waiter.wait(run.next_step())
            if self.ended(run, step):
                return SUCCESS
            if isinstance(step, Build):
                if built is not None and built["sha"] == step.sha:
                    return (yield self._finish(run, step.sha, None, SKIP, t0, built,
                                               {"reason": "built, but still no image"}))
                self.show(report.step_title(self.n, step.candidates_left, "build", step.sha))
                handle = run.start_build(self, step.sha, "on-demand build of")
                bt = time.time()
                results = yield run.waiter.wait(handle.wait())
                built = {"sha": step.sha, "results": results, "seconds": round(time.time() - bt, 1),
                         "buildset": handle.bsid}
                yield run.waiter.wait(run.refresh())
                if run.has_image(step.sha) is None:
                    return (yield self._finish(run, step.sha, None, SKIP, t0, built,
                                               {"reason": "the build failed: no image"}))
                continue
            return (yield self._test(run, step, t0, built))

    @defer.inlineCallbacks
    def _test(self, run: BisectRun, step: Test, t0: float, built):
        image = step.image
        self.show(report.step_title(self.n, step.candidates_left, "test", step.sha, image.name))
        self.addURL(f"image {image.name}", image.url)
        tt = time.time()
        tested = run.tester.test(image, step.sha)
        ahead = yield self._build_ahead(run, step.sha)
        try:
            verdict, details = yield run.waiter.wait(tested)
        except TesterAbort as e:
            run.end = (report.ABORTED, f"step {self.n}, {step.sha[:12]}: {e}")
            self.build_summary = True
            self.show(report.step_title(self.n, step.candidates_left, "test", step.sha, image.name,
                                        outcome=f"aborted: {e}"))
            return FAILURE
        details = {**details, "test_seconds": round(time.time() - tt, 1)}
        if ahead is not None:
            ahead, details["ahead"] = ahead  # the builds started ahead (result.json counts them)
            unneeded = {GOOD: ahead.if_bad, BAD: ahead.if_good}.get(verdict)
            needed = {GOOD: ahead.if_good, BAD: ahead.if_bad}.get(verdict)
            if unneeded and unneeded != needed and unneeded in run.inflight:
                run.inflight[unneeded].cancel(f"not needed after {step.sha[:12]} tested {verdict}")
                details["cancelled"] = unneeded
        return (yield self._finish(run, step.sha, image, verdict, t0, built, details,
                                   candidates_left=step.candidates_left))

    @defer.inlineCallbacks
    def _build_ahead(self, run: BisectRun, sha: str):
        """While ``sha`` is tested: build the next midpoint for either verdict, if a worker is free."""
        if not run.request.build_missing:
            return None
        free = yield run.free_slots(self.master, self.build.builder.name)
        if free <= 0:
            return None
        ahead = yield threads.deferToThread(run.session.prefetch, sha, run.has_image)
        started = ahead.shas()[:free]
        for s in started:
            run.start_build(self, s, "build ahead of")
        return ahead, started

    @defer.inlineCallbacks
    def _finish(self, run: BisectRun, sha: str, image, verdict: str, t0: float, built, details: dict,
                candidates_left: int | None = None):
        yield run.record(sha, verdict)
        rec = {"n": self.n, "round": self.n, "sha": sha, "image": image.name if image else None,
               "verdict": verdict, "started": report.now_iso(t0), "seconds": round(time.time() - t0, 1),
               "build": built, **details}
        yield annotate(self, rec, run.inflight.get(sha) if built else None)
        yield threads.deferToThread(run.dir.append_step, rec)
        left = candidates_left or len(run.session.state.candidates())
        outcome = verdict if image else f"build failed: {verdict}"
        self.show(report.step_title(self.n, left, "test" if image else "build", sha,
                                    image.name if image else None, outcome=outcome))
        self.setProperty("bisect_verdicts", report.verdicts_line(run.dir.steps()), "bisect")
        bb.add_steps_after_current(self.build, [BisectRound(self.n + 1)])
        return SUCCESS


class BisectMachineRound(_NumberedRound):
    """One multisection round on a class of machines (:mod:`buildbot_kernel.steps.bisect_rounds`)."""

    label = "round"

    @defer.inlineCallbacks
    def _round(self, run: BisectRun):
        yield run.waiter.wait(run.refresh())
        rstep = yield run.waiter.wait(run.next_round(run.round_size()))
        if self.ended(run, rstep):
            return SUCCESS
        recs, _ = yield test_round(self, run, rstep, len(run.dir.steps()) + 1)
        tested = [r for r in recs if r["verdict"]]
        if tested:
            yield record_round(run, tested)
        left = len(run.session.state.candidates())
        self.show(report.round_summary({"round": self.n, "candidates": recs}) + f"; {left} left")
        self.setProperty("bisect_verdicts", report.verdicts_line(run.dir.steps()), "bisect")
        lost = [r for r in recs if not r["verdict"]]
        if lost:  # every machine of the class broke: an infrastructure failure is never a verdict
            run.end = (report.ABORTED, f"round {self.n}: {lost[0]['reason']}")
            self.build_summary = True
            return FAILURE
        bb.add_steps_after_current(self.build, [BisectMachineRound(self.n + 1)])
        return SUCCESS


class VerifyCulprit(_BisectStep):
    """The culprit re-tested (expected bad) and its first parent (expected good), in that order."""

    name = "verify"

    @defer.inlineCallbacks
    def run(self):
        run: BisectRun = bb.build_state(self.build)["run"]
        culprit = run.end[1].sha
        parent = yield threads.deferToThread(run.session.state.repo.resolve, f"{culprit}^")
        checks = [("culprit", culprit, BAD)] + ([("parent", parent, GOOD)] if parent else [])
        run.verification = []
        try:
            for role, sha, expected in checks:
                self.show(f"verify: test {role} {report.short(sha)} again (expect {expected})")
                verdict, reason = yield self._test(run, sha)
                run.verification.append({"role": role, "sha": sha, "expected": expected, "verdict": verdict,
                                         **({"reason": reason} if reason else {})})
        except Interrupted as e:
            run.end = None  # unverified is never reported: resumed after a restart, else aborted
            self.show(f"verify: interrupted ({e})")
            return self.stop_results(self.stop_reason)
        verified, why = report.verification_outcome(run.verification)
        if report.is_contradiction(run.verification):
            run.end = (report.FLAKY, (culprit, f"the test does not reproduce: {why}"))
            self.show(f"flaky: {why}")
            return WARNINGS
        self.show(f"verified: {report.short(culprit)} bad, its parent good" if verified
                  else f"not verified: {why}")
        return SUCCESS if verified else WARNINGS

    @defer.inlineCallbacks
    def _test(self, run: BisectRun, sha: str):
        """(verdict or None, why none)."""
        yield run.waiter.wait(run.refresh())
        image = run.has_image(sha)
        if image is None and run.request.build_missing:
            handle = run.start_build(self, sha, "verification build of")
            yield run.waiter.wait(handle.wait())
            yield run.waiter.wait(run.refresh())
            image = run.has_image(sha)
        if image is None:
            return None, "no image"
        self.addURL(f"image {image.name}", image.url)
        try:
            verdict, _ = yield run.waiter.wait(run.tester.test(image, sha))
        except TesterAbort as e:
            return None, str(e)
        return verdict, ""


class FinishBisect(_BisectStep):
    name = "result"
    alwaysRun = True
    warnOnWarnings = True
    build_summary = True

    @defer.inlineCallbacks
    def run(self):
        run: BisectRun | None = bb.build_state(self.build).get("run")
        if run is None:
            self.hideStepIf = True
            return SKIPPED
        if run.end is None:
            if self.build.results == RETRY or bb.shutting_down(self.master):
                self.build_summary = False
                self.show("interrupted: resumes when the master starts again")
                return SKIPPED
            run.end = (report.ABORTED, f"stopped: {self.build.stopped_reason or 'cancelled'}")
        for handle in run.inflight.values():
            if not handle.done and run.end[0] != report.DONE:
                handle.cancel("the bisect ended")
        doc = yield run.result()
        yield threads.deferToThread(run.dir.write_result, doc)
        yield self.addCompleteLog("result.json", json.dumps(doc, indent=1, sort_keys=True) + "\n")
        log_text = yield threads.deferToThread(run.dir.file(records.LOG).read_text)
        yield self.addCompleteLog("bisect.log", log_text)
        self.setProperty("bisect_result", {k: doc[k] for k in ("status", "first_bad", "candidates", "reason",
                                                               "verified")},
                         "bisect")
        for label, ref in (("first bad", doc["first_bad"]), ("last good", doc["last_good"])):
            if ref and ref.get("image_url"):
                self.addURL(f"{label}: {ref['image']}", ref["image_url"])
        status = doc["status"]
        if status == report.DONE:
            self.show(report.culprit_summary(doc["first_bad"]) + (" (verified)" if doc["verified"]
                                                                  else " (not verified)"))
            return SUCCESS
        if status == report.ABORTED:
            self.show(f"aborted: {doc['reason']}")
            return FAILURE
        if status == report.FLAKY:
            self.show(f"flaky, no culprit: {doc['reason']}")
            return WARNINGS
        self.show(report.unresolved_summary(doc["candidates"], doc["reason"]))
        return WARNINGS
