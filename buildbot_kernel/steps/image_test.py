"""Every new image of a watched branch is tested; a new failure is re-run, then bisected unattended.

* :class:`TriggerImageTests` ends a branch build that published an image: one "image-test" build per
  ``[[test]]`` watching the branch (README.md "Regression watch").
* :class:`PickTester` (first step of an image-test build) chooses a free tester of the test and adds
  :class:`RunImageTest` holding that machine's lock, the same master lock a bisect on it holds.
* :class:`RunImageTest` runs the test through the bisect's own testers (the "bisect-test" builder for
  ``local``, the farm driver for a machine), stores the result beside the image (imagetree/results.py)
  and regenerates the index, then watches for a regression: a fail after a pass on an ancestor image is
  re-run once; a second fail starts one bisect of (test, branch, bad sha), claimed in the database so a
  second master or a later image never starts another, and sets the ``regression`` property.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from buildbot.plugins import util
from buildbot.process import buildstep
from buildbot.process.properties import Properties
from buildbot.process.results import CANCELLED, FAILURE, RETRY, SUCCESS, WARNINGS
from twisted.internet import defer, threads
from twisted.python import log

from buildbot_kernel import buildbot_adapter as bb
from buildbot_kernel import gitrepo, loop
from buildbot_kernel.bisect.engine import BisectInputError
from buildbot_kernel.bisect.mirror import update_mirror
from buildbot_kernel.bisect.request import LOCAL_TESTER
from buildbot_kernel.bisect.tester import TesterAbort
from buildbot_kernel.bisect.tree_images import TreeImages
from buildbot_kernel.farm.driver import lock_name
from buildbot_kernel.imagetree import reserved, results
from buildbot_kernel.settings import Test
from buildbot_kernel.steps.bisect_testers import make_tester, test_output
from buildbot_kernel.steps.subbuilds import Interrupted
from buildbot_kernel.target import BuildTarget
from buildbot_kernel.utctime import iso_utc

IMAGE_TEST_SCHEDULER = "image-test"
PUBLISHED_PROPERTY = "published_image"  # set by the publish step when it renamed a new image in
MAX_LOG = 1 << 20  # characters of a test's output kept beside the image
TEST_PROPS = ("image_test", "image_name", "image_branch", "image_sha", "image_repository")


@dataclass(frozen=True)
class LoopContext:
    """What the master configuration gives every image-test build."""

    tests: dict[str, Test]  # the watched [[test]]s by name
    images_root: str
    state_dir: str
    base_url: str
    test_scheduler: str  # the bisect-test builder's Triggerable (local tester)
    bisect_scheduler: str  # the bisect ForceScheduler
    bisect_builder: str
    builders: dict[tuple[str, str], tuple[str, str, str]]  # (repository, branch) -> (builder, url, build)
    machines: dict[str, list[str]] = field(default_factory=dict)  # tester name (machine, class) -> machines


@dataclass(frozen=True)
class _Run:
    """What :func:`make_tester` reads of a bisect request."""

    tester: str
    command: str
    mode: str
    timeout: int


def watched_build(step) -> bool:
    """A new image of the branch: published by this build, and not an older commit a bisect asked for
    (the bisect tests those itself; testing them here could start a second bisect of the same range)."""
    return bool(step.getProperty(PUBLISHED_PROPERTY)) and not step.getProperty("bisect_id")


class TriggerImageTests(buildstep.BuildStep):
    """Runs after the publish step; starts (does not wait for) one image-test build per watching test."""

    name = "trigger-tests"

    def __init__(self, target: BuildTarget, tests: list[str], **kwargs):
        self.target = target
        self.tests = list(tests)
        kwargs.setdefault("doStepIf", watched_build)
        kwargs.setdefault("hideStepIf", lambda results, step: not watched_build(step))
        super().__init__(**kwargs)

    def run(self):
        sched = bb.scheduler(self.master, IMAGE_TEST_SCHEDULER)
        name = self.getProperty(PUBLISHED_PROPERTY)
        for test in self.tests:
            props = Properties()
            for k, v in (("image_test", test), ("image_name", name), ("image_branch", self.target.branch),
                         ("image_sha", self.getProperty("commit_sha")),
                         ("image_repository", self.target.repository)):
                props.setProperty(k, v, "Scheduler")
            props.setProperty("reason", f"test {test} on {name}", "trigger")
            ids, done = sched.trigger(waited_for=False, sourcestamps=[], set_props=props,
                                      parent_buildid=self.build.buildid, parent_relationship="new image")
            ids.addErrback(log.err, f"image-test: cannot start {test} on {name}")
            done.addErrback(lambda f: None)
        self.descriptionDone = [f"testing {name}: {', '.join(self.tests)}"]
        return defer.succeed(SUCCESS)


class PickTester(buildstep.BuildStep):
    """Chooses the first free tester of the test (else the first one, to wait for) and adds the run,
    which holds the machine's lock while it runs."""

    name = "pick tester"

    def __init__(self, ctx: LoopContext, **kwargs):
        self.ctx = ctx
        super().__init__(**kwargs)

    def _lookup(self, name: str) -> dict | None:
        """The index entry of the image named ``name`` (the form gives only the name)."""
        tree = TreeImages(self.ctx.images_root, self.ctx.base_url)
        return next((i.entry for i in tree.index().images if i.name == name), None)

    @defer.inlineCallbacks
    def run(self):
        test = self.ctx.tests.get(self.getProperty("image_test") or "")
        name = str(self.getProperty("image_name") or "").strip()
        if name and not self.getProperty("image_sha"):  # from the form: the rest comes from the tree
            entry = yield threads.deferToThread(self._lookup, name)
            if entry is None:
                self.descriptionDone = [f"image_name: no image named {name[:80]!r} in the tree"]
                return FAILURE
            for prop, key in (("image_branch", "branch"), ("image_sha", "sha"), ("image_repository", "repository")):
                self.setProperty(prop, entry[key], "image")
        missing = [p for p in TEST_PROPS if not self.getProperty(p)]
        if test is None or missing or not test.testers:
            self.descriptionDone = [f"image_test: not a [[test]] with testers: {self.getProperty('image_test')!r}"
                                    if test is None
                                    else f"missing properties: {', '.join(missing)}" if missing else "no testers"]
            return FAILURE
        # a tester may name a class: each of its machines is a candidate (a bisect it starts uses the class)
        options = [(entry, m) for entry in test.testers
                   for m in ([entry] if entry == LOCAL_TESTER else self.ctx.machines.get(entry, [entry]))]
        entry, chosen = options[0]
        for e, tester in options:
            if tester == LOCAL_TESTER:
                entry, chosen = e, tester
                break
            if (yield bb.lock_available(self, bb.master_lock(lock_name(tester)))):
                entry, chosen = e, tester
                break
        self.setProperty("tester", chosen, "pick tester")
        locks = [] if chosen == LOCAL_TESTER else [bb.master_lock(lock_name(chosen))]
        bb.add_steps_after_current(self.build, [RunImageTest(self.ctx, test, chosen, locks=locks,
                                                                   bisect_tester=entry)])
        self.descriptionDone = [f"tester {chosen}"]
        return SUCCESS


class RunImageTest(buildstep.BuildStep):
    name = "test"

    def __init__(self, ctx: LoopContext, test: Test, tester: str, bisect_tester: str = "", **kwargs):
        self.ctx = ctx
        self.test = test
        self.tester_name = tester
        self.bisect_tester = bisect_tester or tester  # the [[test]]'s tester entry: a class bisects on all
        super().__init__(**kwargs)
        self.tester = None

    # -- the image ---------------------------------------------------------------------------------------
    def _find(self, repository: str, branch: str, name: str):
        """(the image, every index entry of its branch) from the tree, or (None, [])."""
        tree = TreeImages(self.ctx.images_root, self.ctx.base_url, repository=repository)
        index = tree.index()
        image = next((i for i in index.images if i.name == name and i.branch == branch), None)
        return image, [i.entry for i in index.images if i.branch == branch], tree

    # -- one run -----------------------------------------------------------------------------------------
    @defer.inlineCallbacks
    def _run_once(self, image, sha: str, attempt: str) -> defer.Deferred:
        """(result, details); an infrastructure failure is the result ``error``, never a verdict."""
        t0 = time.time()
        try:
            verdict, details = yield self.tester.test(image, sha)
            result = loop.VERDICT_RESULT[verdict]
        except TesterAbort as e:
            result, details = loop.ERROR, {"reason": str(e)}
        except Interrupted:
            raise
        except Exception as e:  # the tester broke (farm, data API): an infrastructure error, not a verdict
            log.err(e, f"image-test: {self.test.name} on {image.name}")
            result, details = loop.ERROR, {"reason": f"{type(e).__name__}: {e}"}
        details = {**details, "seconds": round(time.time() - t0, 1)}
        text = yield self._log_of(details)
        yield self.addCompleteLog(f"{attempt}: {result}", text)
        return result, details, text

    @defer.inlineCallbacks
    def _log_of(self, details: dict) -> defer.Deferred:
        """The test command's own output (local tester) after the details."""
        text = json.dumps(details, indent=1, sort_keys=True, default=str) + "\n"
        buildid = details.get("test_build")
        if not buildid:
            return text
        text += yield test_output(self.master, buildid)
        if len(text) > MAX_LOG:  # the end says most: the tree keeps the last MAX_LOG characters
            text = f"[... {len(text) - MAX_LOG} characters left out ...]\n" + text[-MAX_LOG:]
        return text

    def interrupt(self, reason):
        if self.tester is not None:
            self.tester.cancel(f"the image-test build was stopped: {reason}")
        return super().interrupt(reason)

    @defer.inlineCallbacks
    def _store(self, tree: TreeImages, image, result: str, text: str, extra: dict) -> defer.Deferred:
        """Why the result could not be stored beside the image ("" when it was): a ``tests`` entry that is
        not a real directory (results.write_result refuses it), the image deleted meanwhile, a full disk.
        Said in full in the step's log ``not stored``; the caller fails the step with it."""
        doc = {"result": result, "date": loop_now(), "machine": self.tester_name,
               "log_url": results.log_url(image.url, self.test.name), **extra}
        tree_service = bb.named_service(self.master, "image-tree")
        modes = tree_service.modes if tree_service is not None else None
        kwargs = {"mode": modes.file_mode, "gid": modes.gid} if modes is not None else {}
        try:
            yield threads.deferToThread(results.write_result, tree.local_dir(image), self.test.name, doc, text,
                                        **kwargs)
        except reserved.RefusedEntry as e:
            reason, detail = e.summary, str(e)
        except OSError as e:
            reason = detail = str(e)
        else:
            return ""
        yield self.addCompleteLog("not stored", f"the {result} result of {self.test.name} on {image.name} was "
                                  f"not stored beside the image:\n{detail}\n")
        return f"result not stored: {reason}"

    @defer.inlineCallbacks
    def _regenerate(self):
        tree_service = bb.named_service(self.master, "image-tree")
        if tree_service is not None:
            yield tree_service.regenerate()

    @defer.inlineCallbacks
    def run(self):
        p = self.getProperty
        name, branch, sha, repository = p("image_name"), p("image_branch"), p("image_sha"), p("image_repository")
        image, entries, tree = yield threads.deferToThread(self._find, repository, branch, name)
        if image is None:
            self.descriptionDone = [f"{name}: no such image in the tree (deleted by retention?)"]
            return WARNINGS
        self.addURL(f"image {name}", image.url)
        sha = image.sha  # the tree's word, not the property's
        run = _Run(self.tester_name, self.test.command, self.test.mode, self.test.timeout)
        ident = f"{self.test.name}-{name}"[:80]
        try:
            self.tester = yield make_tester(self, run, ident, self.ctx.test_scheduler, tree.local_dir)
        except BisectInputError as e:
            problem = yield self._store(tree, image, loop.ERROR, f"{e.field}: {e.message}\n", {})
            yield self._regenerate()
            self.descriptionDone = [f"{self.test.name}: error: {e.message}" + (f"; {problem}" if problem else "")]
            return FAILURE
        try:
            result, details, text = yield self._run_once(image, sha, "run")
            extra = {}
            base = None
            if result == loop.FAIL:
                base = yield self._baseline(repository, branch, sha, entries)
                if loop.is_regression(base, self.test.name):
                    again, _, text2 = yield self._run_once(image, sha, "re-run")
                    extra["rerun"] = again
                    text += f"\n=== re-run: {again} ===\n{text2}"
        except Interrupted as e:
            self.descriptionDone = [f"interrupted: {e}"]
            # a master shutdown puts the request back: the image is tested after the restart
            return RETRY if bb.shutting_down(self.master) else CANCELLED
        problem = yield self._store(tree, image, result, text, extra)
        yield self._regenerate()
        summary = f"{self.test.name} on {name}: {result}"
        if extra.get("rerun") == loop.FAIL:
            summary += "; " + (yield self._start_bisect(repository, branch, base, image))
        elif extra.get("rerun"):
            summary += f"; the re-run gave {extra['rerun']}: no bisect"
        elif result == loop.FAIL:
            summary += "; " + ("already failing before" if base else "no earlier tested ancestor")
        if problem:  # not on the tree: the index and the next regression check never see this result
            self.descriptionDone = [f"{summary}; {problem}"]
            return FAILURE
        self.descriptionDone = [summary]
        return {loop.PASS: SUCCESS, loop.FAIL: FAILURE}.get(result, WARNINGS)

    # -- the regression watch ----------------------------------------------------------------------------
    @defer.inlineCallbacks
    def _baseline(self, repository: str, branch: str, sha: str, entries: list[dict]):
        """The nearest tested ancestor image (a pass or a fail), asked of the bisect's mirror clone."""
        if (repository, branch) not in self.ctx.builders:  # an image of a branch no longer built here
            return None
        url = self.ctx.builders[(repository, branch)][1]

        def find():
            mirror = update_mirror(self.ctx.state_dir, repository, url)
            repo = gitrepo.Repo(mirror)
            return loop.baseline(entries, self.test.name, sha, repo.is_ancestor)
        try:
            return (yield threads.deferToThread(find))
        except (BisectInputError, gitrepo.GitError) as e:
            yield self.addCompleteLog("git", f"cannot compare with earlier images: {e}\n")
            return None

    @defer.inlineCallbacks
    def _start_bisect(self, repository: str, branch: str, good: dict, bad_image) -> defer.Deferred:
        """One bisect per (test, branch, bad sha), claimed atomically in the database; the summary."""
        test, bad = self.test.name, bad_image.entry
        key = loop.claim_key(test, branch, bad["sha"])
        mine = {"buildid": self.build.buildid, "master": bb.master_id(self.master), "claimed": loop_now()}
        claim = yield bb.claim_once(self.master, loop.STATE_OBJECT, key, mine)
        if claim != mine:
            return f"a bisect of {bad['sha'][:12]} was already started (build {claim.get('buildid')})"
        builder, _, build_config = self.ctx.builders[(repository, branch)]
        sched = bb.scheduler(self.master, self.ctx.bisect_scheduler)
        who = loop.owner(test, branch, good["sha"], bad["sha"])
        try:
            bsid, brids = yield sched.force(
                who, builderNames=[self.ctx.bisect_builder], reason=loop.BISECT_REASON, target=builder,
                good=good["sha"], bad=bad["sha"], tester=self.bisect_tester, test=test, command="", mode=self.test.mode,
                build_missing=True, build_config=build_config, max_steps=0)
        except Exception as e:  # a form the settings made invalid: said, and the claim kept (never two)
            yield bb.set_stored(self.master, loop.STATE_OBJECT, key, {**mine, "error": str(e)})
            return f"could not start the bisect: {e}"
        bisect = {"buildset": bsid, "buildrequests": sorted(brids.values())}
        yield bb.set_stored(self.master, loop.STATE_OBJECT, key, {**mine, **bisect})
        doc = loop.regression_document(test, branch, repository, good, bad, self.tester_name, bisect)
        self.setProperty(loop.REGRESSION_PROPERTY, doc, "regression-watch")
        return f"regression since {good['sha'][:12]}: bisect started (buildset {bsid})"


def loop_now() -> str:
    return iso_utc()


def image_test_factory(ctx: LoopContext) -> util.BuildFactory:
    return util.BuildFactory([PickTester(ctx)])
