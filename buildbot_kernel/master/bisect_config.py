"""The bisect builder's part of the master configuration, kept apart from the build pipeline's.

``add_bisect`` adds to a BuildmasterConfig dict made by ``make_config``:

* a builder per branch builder for the bisects' on-demand and ahead builds (``bisect-build-<builder>``,
  tagged ``bisect``), with a Triggerable scheduler of the same name: the same build steps, the same work
  directory on the worker and the same tree lock as the branch builder (one kernel checkout per branch,
  never two builds in it at once), but its own status, so a branch builder's colour, console row and
  grid cell only ever mean the branch's own builds.  Their images are published in the tree like any
  other, marked ``on_demand`` (docs/index-format.md): never a branch's ``latest`` unless the head's;
* the "bisect-test" builder on the build workers (the local-command tester) and its Triggerable;
* the "bisect" builder, with its ForceScheduler form, also reachable as
  ``POST /api/v2/forceschedulers/bisect`` (docs/bisect.md).  A worker runs one build of a builder at a
  time, so the builder gets in-process workers of its own, one per test machine plus one: bisects on
  different testers run side by side, and a bisect on a test machine holds that machine's master lock
  for its whole run, so a second bisect on the same machine waits in the queue.  With several masters
  a bisect on a machine runs on the master that runs the test farm (master/farm_route.py).
"""

from __future__ import annotations

from buildbot.plugins import schedulers, util
from buildbot.worker.local import LocalWorker

from buildbot_kernel.bisect.request import LOCAL_TESTER, MODES, Target
from buildbot_kernel.farm.driver import lock_name
from buildbot_kernel.master import forms
from buildbot_kernel.master.factory import kernel_build_factory
from buildbot_kernel.master.farm_route import farm_gate
from buildbot_kernel.settings import tester_names
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


def bisect_builder_name(builder: str) -> str:
    """The builder of a branch builder's bisect builds."""
    return f"bisect-build-{builder}"


def machine_locks(tester, classes: dict | None = None) -> list:
    """The bisect build's locks: the tester machine's, exclusive, for the whole bisect (the local tester
    needs none).  A class of several machines takes none here: each test holds its machine's lock
    (steps/bisect_rounds.py); a class of one is its machine.  A tester ``classes`` does not list gets none:
    the start step refuses it, and Buildbot keeps every lock it ever made, so a lock named after each
    value a REST call sends would grow the master without bound."""
    if not tester or tester == LOCAL_TESTER:
        return []
    machines = [str(tester)] if classes is None else classes.get(str(tester), [])
    return [util.MasterLock(lock_name(machines[0])).access("exclusive")] if len(machines) == 1 else []


def bisect_testers(get) -> list:
    """The tester a bisect request names (master/farm_route.py)."""
    return [get("tester")]


def bisect_factory(ctx: BisectContext) -> util.BuildFactory:
    """Two fixed steps; the bisect steps are inserted between them as the bisect goes."""
    return util.BuildFactory([StartBisect(ctx), FinishBisect()])


def bisect_form(ctx: BisectContext) -> schedulers.ForceScheduler:
    choices = [t.builder for t in ctx.targets]
    no_source = forms.no_source()
    # choices are not strict: a wrong value reaches the start step, which names the field and the choices
    return schedulers.ForceScheduler(
        name=FORCE_SCHEDULER, builderNames=[BISECT_BUILDER], label="Bisect a regression",
        buttonName="Start bisect", codebases=[no_source],
        reason=forms.reason("bisect"),
        properties=[
            util.ChoiceStringParameter(name="target", label="repository/branch", choices=choices,
                                       default=choices[0], strict=False),
            util.StringParameter(name="good", label="good revision(s), space-separated", size=60),
            util.StringParameter(name="bad", label="bad revision", size=60),
            util.ChoiceStringParameter(name="tester", label="tester (local command, test machine or machine class)",
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
            util.IntParameter(name="max_machines", label="max machines of the tester's class at once "
                              "(0 = every free one)", default=0),
        ])


def add_bisect(c: dict, settings, targets, state_dir: str, images_root: str, build_workers: list[str]
               ) -> BisectContext:
    """``targets``: (BuildTarget, builder name) pairs as ``branch_targets`` returns them."""
    ctx = BisectContext(
        targets=[Target(builder=b, repository=t.repository, url=t.url, branch=t.branch, build=t.build_name)
                 for t, b in targets],
        builds=[b.name for b in settings.builds],
        machines=list(tester_names(settings.machines)), classes=tester_names(settings.machines),
        state_dir=state_dir, images_root=images_root, base_url=settings.images.base_url,
        build_schedulers={b: build_scheduler_name(b) for _, b in targets},
        test_scheduler=TEST_SCHEDULER, build_workers=list(build_workers),
        tests=list(settings.tests),
        auth=settings.auth)
    branch_builders = {bc.name: bc for bc in c["builders"]}
    for t, b in targets:
        name = bisect_builder_name(b)
        # the branch builder's lock objects themselves: Buildbot refuses two locks of one name
        c["builders"].append(util.BuilderConfig(
            name=name, workernames=list(build_workers), factory=kernel_build_factory(settings, t),
            workerbuilddir=branch_builders[b].workerbuilddir, locks=list(branch_builders[b].locks),
            tags=["bisect"],  # not the repository's or the branch's tag: filtering by those shows branch builds only
            description=f"{t.repository} {t.branch}: commits a bisect builds on demand (in {b}'s work tree)"))
        # the trigger marks the builds on_demand (steps/bisect.py); no ForceScheduler: only bisects start them
        c["schedulers"].append(schedulers.Triggerable(name=build_scheduler_name(b), builderNames=[name]))
    c["schedulers"].append(schedulers.Triggerable(name=TEST_SCHEDULER, builderNames=[TEST_BUILDER]))
    c["builders"].append(util.BuilderConfig(
        name=TEST_BUILDER, workernames=list(build_workers), factory=bisect_test_factory(), tags=["bisect"],
        collapseRequests=False,  # each request is another bisect's or another image's test
        description="runs a bisect's local test command on one image (BISECT_* environment)"))
    bisect_workers = bisect_worker_names(len(settings.machines))
    c["workers"] += [LocalWorker(w) for w in bisect_workers]
    c["builders"].append(util.BuilderConfig(
        name=BISECT_BUILDER, workernames=bisect_workers, factory=bisect_factory(ctx), tags=["control", "bisect"],
        locks=util.Transform(machine_locks, util.Property("tester"), ctx.classes),
        canStartBuild=farm_gate(settings, bisect_testers),  # a machine's bisect: on the farm's master
        collapseRequests=False,  # requests carry no source stamp: Buildbot would merge two bisects into one
        description="finds the first bad commit: prebuilt images first, missing commits built on demand"))
    c["schedulers"].append(bisect_form(ctx))
    return ctx
