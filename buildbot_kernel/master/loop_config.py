"""The regression watch's part of the master configuration (README.md "Regression watch").

``add_loop`` adds the "image-test" builder and its Triggerable, which the branch builds feed with each
image they publish on a watched branch, and the "test-image" form (maintainers: run a test with
testers on any image by name).  Its builds run on in-process workers of their own (one per
test machine plus one), so tests on different machines run side by side; a machine test holds the
machine's master lock (the bisect's) only while it runs, and a local test runs on a build worker
through the "bisect-test" builder.  With several masters a test naming a machine runs on the master
that runs the test farm (master/farm_route.py).
"""

from __future__ import annotations

from buildbot.plugins import schedulers, util
from buildbot.worker.local import LocalWorker

from buildbot_kernel.master import forms
from buildbot_kernel.master.bisect_config import BISECT_BUILDER, FORCE_SCHEDULER, TEST_SCHEDULER
from buildbot_kernel.master.farm_route import farm_gate
from buildbot_kernel.settings import tester_names
from buildbot_kernel.steps.image_test import IMAGE_TEST_SCHEDULER, LoopContext, image_test_factory

IMAGE_TEST_BUILDER = "image-test"
IMAGE_TEST_FORCE = "test-image"


def image_test_worker_names(machines: int) -> list[str]:
    return [f"image-test-local-{i}" for i in range(1, machines + 2)]


def image_test_testers(tests: dict):
    """The testers of the [[test]] an image-test request names (master/farm_route.py); a test this
    master does not know names none: its build fails at once, naming the field."""
    def testers(get) -> list:
        test = tests.get(str(get("image_test") or ""))
        return list(test.testers) if test is not None else []
    return testers


def add_loop(c: dict, settings, targets, state_dir: str, images_root: str) -> LoopContext | None:
    """``targets``: (BuildTarget, builder name) pairs; nothing is added when no test names testers."""
    watched = [t for t in settings.tests if t.testers]
    if not watched:
        return None
    ctx = LoopContext(
        tests={t.name: t for t in watched},
        images_root=images_root, state_dir=state_dir, base_url=settings.images.base_url,
        test_scheduler=TEST_SCHEDULER, bisect_scheduler=FORCE_SCHEDULER, bisect_builder=BISECT_BUILDER,
        builders={(t.repository, t.branch): (b, t.url, t.build_name) for t, b in targets},
        machines=tester_names(settings.machines))
    workers = image_test_worker_names(len(settings.machines))
    c["workers"] += [LocalWorker(w) for w in workers]
    c["schedulers"].append(schedulers.Triggerable(name=IMAGE_TEST_SCHEDULER, builderNames=[IMAGE_TEST_BUILDER]))
    c["builders"].append(util.BuilderConfig(
        name=IMAGE_TEST_BUILDER, workernames=workers, factory=image_test_factory(ctx), tags=["test"],
        collapseRequests=False,  # each request is another image's or another test's
        canStartBuild=farm_gate(settings, image_test_testers(ctx.tests)),  # machine tests: the farm's master
        description="tests each new image of a watched branch; a new failure is re-run, then bisected"))
    c["schedulers"].append(test_form(sorted(ctx.tests)))
    return ctx


def test_form(tests: list[str]) -> schedulers.ForceScheduler:
    no_source = forms.no_source()
    return schedulers.ForceScheduler(
        name=IMAGE_TEST_FORCE, builderNames=[IMAGE_TEST_BUILDER], label="Test an image", buttonName="Test",
        codebases=[no_source], reason=forms.reason("test an image"),
        properties=[
            util.ChoiceStringParameter(name="image_test", label="test", choices=tests, default=tests[0],
                                       strict=False),  # a wrong value fails the build's first step, naming it
            util.StringParameter(name="image_name", label="image name (as in index.json)", size=80),
        ])
