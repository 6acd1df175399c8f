"""The bisect builder's part of the master configuration, kept apart from the build pipeline's.

``add_bisect`` adds to a BuildmasterConfig dict made by ``make_config``:

* a Triggerable scheduler per branch builder (``bisect-build-<builder>``), through which on-demand and
  ahead builds go, so their images are published in the tree like any other;
* the "bisect-test" builder on the build workers (the local-command tester) and its Triggerable;
* the "bisect" builder, with its ForceScheduler form, also reachable as
  ``POST /api/v2/forceschedulers/bisect`` (docs/bisect.md).  A worker runs one build of a builder at a
  time, so the builder gets in-process workers of its own, one per test machine plus one: bisects on
  different testers run side by side, and a bisect on a test machine holds that machine's master lock
  for its whole run, so a second bisect on the same machine waits in the queue.
"""

from __future__ import annotations

from buildbot.plugins import schedulers, util
from buildbot.worker.local import LocalWorker

from buildbot_kernel.bisect.request import LOCAL_TESTER, MODES, NamedTest, Target
from buildbot_kernel.farm.driver import lock_name
from buildbot_kernel.steps.bisect import BisectContext, FinishBisect, StartBisect
from buildbot_kernel.steps.bisect_test import bisect_test_factory
from buildbot_kernel.util import identifier

BISECT_BUILDER = "bisect"
TEST_BUILDER = "bisect-test"
FORCE_SCHEDULER = "bisect"
TEST_SCHEDULER = "bisect-test"


def bisect_worker_names(machines: int) -> list[str]:
    return [f"bisect-local-{i}" for i in range(1, machines + 2)]


def build_scheduler_name(builder: str) -> str:
    return identifier(f"bisect-build-{builder}")


def machine_locks(tester) -> list:
    """The bisect build's locks: the tester machine's, exclusive (the local tester needs none)."""
    if not tester or tester == LOCAL_TESTER:
        return []
    return [util.MasterLock(lock_name(str(tester))).access("exclusive")]


def bisect_factory(ctx: BisectContext) -> util.BuildFactory:
    """Two fixed steps; the bisect steps are inserted between them as the bisect goes."""
    return util.BuildFactory([StartBisect(ctx), FinishBisect()])


def bisect_form(ctx: BisectContext) -> schedulers.ForceScheduler:
    choices = [t.builder for t in ctx.targets]
    no_source = util.CodebaseParameter(
        "", branch=util.FixedParameter(name="branch", default=""),
        revision=util.FixedParameter(name="revision", default=""),
        repository=util.FixedParameter(name="repository", default=""),
        project=util.FixedParameter(name="project", default=""))
    # choices are not strict: a wrong value reaches the start step, which names the field and the choices
    return schedulers.ForceScheduler(
        name=FORCE_SCHEDULER, builderNames=[BISECT_BUILDER], label="Bisect a regression",
        buttonName="Start bisect", codebases=[no_source],
        reason=util.StringParameter(name="reason", label="reason", default="bisect", size=40),
        properties=[
            util.ChoiceStringParameter(name="target", label="repository/branch", choices=choices,
                                       default=choices[0], strict=False),
            util.StringParameter(name="good", label="good revision(s), space-separated", size=60),
            util.StringParameter(name="bad", label="bad revision", size=60),
            util.ChoiceStringParameter(name="tester", label="tester (local command or test machine)",
                                       choices=[LOCAL_TESTER] + ctx.machines, default=LOCAL_TESTER,
                                       strict=False),
            # a named [[test]] (maintainers), or a free-form command (admins; checked on the server)
            util.ChoiceStringParameter(name="test", label="named test",
                                       choices=[""] + [t.name for t in ctx.tests], default="", strict=False),
            util.StringParameter(name="command", label="or (admins only) a test command: exit 0 good, 125 skip, "
                                 "1-127 bad", size=80),
            util.ChoiceStringParameter(name="mode", label="mode of the command (boot: boot failure is bad; "
                                       "test: skip)", choices=list(MODES), default=MODES[0], strict=False),
            util.BooleanParameter(name="build_missing", label="build commits without an image", default=True),
            util.ChoiceStringParameter(name="build_config", label="build config", choices=ctx.builds,
                                       default=ctx.targets[0].build, strict=False),
            util.IntParameter(name="max_steps", label="max test steps (0 = no limit)", default=0),
        ])


def add_bisect(c: dict, settings, targets, state_dir: str, images_root: str, build_workers: list[str]
               ) -> BisectContext:
    """``targets``: (BuildTarget, builder name) pairs as ``branch_targets`` returns them."""
    ctx = BisectContext(
        targets=[Target(builder=b, repository=t.repository, url=t.url, branch=t.branch, build=t.build_name)
                 for t, b in targets],
        builds=[b["name"] for b in settings.builds],
        machines=[m["name"] for m in settings.machines],
        state_dir=state_dir, images_root=images_root, base_url=settings.images["base_url"],
        build_schedulers={b: build_scheduler_name(b) for _, b in targets},
        test_scheduler=TEST_SCHEDULER, build_workers=list(build_workers),
        tests=[NamedTest(t["name"], t["command"], t["mode"], t["timeout"]) for t in settings.tests],
        auth=settings.auth)
    for _, b in targets:
        c["schedulers"].append(schedulers.Triggerable(name=build_scheduler_name(b), builderNames=[b]))
    c["schedulers"].append(schedulers.Triggerable(name=TEST_SCHEDULER, builderNames=[TEST_BUILDER]))
    c["builders"].append(util.BuilderConfig(
        name=TEST_BUILDER, workernames=list(build_workers), factory=bisect_test_factory(), tags=["bisect"],
        collapseRequests=False,  # each request is another bisect's or another image's test
        description="runs a bisect's local test command on one image (BISECT_* environment)"))
    bisect_workers = bisect_worker_names(len(settings.machines))
    c["workers"] += [LocalWorker(w) for w in bisect_workers]
    c["builders"].append(util.BuilderConfig(
        name=BISECT_BUILDER, workernames=bisect_workers, factory=bisect_factory(ctx), tags=["control", "bisect"],
        locks=util.Transform(machine_locks, util.Property("tester")),
        collapseRequests=False,  # requests carry no source stamp: Buildbot would merge two bisects into one
        description="finds the first bad commit: prebuilt images first, missing commits built on demand"))
    c["schedulers"].append(bisect_form(ctx))
    return ctx
