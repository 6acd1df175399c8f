"""The image-test build's first step: a free machine is chosen, and the run holds that machine's lock."""

from __future__ import annotations

from buildbot.locks import MasterLock
from buildbot.process.results import FAILURE, SUCCESS
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import TestBuildStepMixin
from twisted.internet import defer
from twisted.trial import unittest

from buildbot_kernel.farm.driver import lock_name
from buildbot_kernel.settings import Test
from buildbot_kernel.steps.image_test import LoopContext, PickTester

SHA = "18097b4c2a6d93e1f3c7a4bbd0e6f9a1b2c3d4e5"


def context(testers) -> LoopContext:
    test = Test(name="boot", command="true", mode="boot", timeout=60, branches=["drm-tip"], testers=testers)
    return LoopContext(tests={"boot": test}, images_root="/nonexistent", state_dir="/nonexistent",
                       base_url="http://127.0.0.1:8011", test_scheduler="bisect-test", bisect_scheduler="bisect",
                       bisect_builder="bisect", builders={},
                       machines={"vm1": ["vm1"], "vm2": ["vm2"], "skl": ["skl-1", "skl-2"], "skl-1": ["skl-1"],
                                 "skl-2": ["skl-2"]})


class TestPickTester(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    def setUp(self):
        self.setup_test_reactor()
        return self.setup_test_build_step()

    def start(self, testers, **props):
        self.setup_step(PickTester(context(testers), name="pick-tester"))
        for k, v in {"image_test": "boot", "image_name": "img", "image_branch": "drm-tip", "image_sha": SHA,
                     "image_repository": "r", **props}.items():
            self.build.setProperty(k, v, "test")
        self.added = []
        self.build.addStepsAfterCurrentStep = self.added.extend

    @defer.inlineCallbacks
    def test_a_busy_machine_is_passed_over_and_the_run_holds_the_chosen_ones_lock(self):
        self.start(["vm1", "vm2"])
        busy = MasterLock(lock_name("vm1"))
        real = yield self.master.botmaster.getLockByID(busy, self.build.config_version)
        real.claim(object(), busy.access("exclusive"))
        self.expect_outcome(result=SUCCESS, state_string="tester vm2")
        self.expect_property("tester", "vm2")
        yield self.run_step()
        [run] = self.added
        assert [(a.lockid.name, a.mode) for a in run.locks] == [(lock_name("vm2"), "exclusive")]

    @defer.inlineCallbacks
    def test_a_class_is_any_free_machine_of_it_and_a_bisect_it_starts_uses_the_class(self):
        self.start(["skl"])
        busy = MasterLock(lock_name("skl-1"))
        real = yield self.master.botmaster.getLockByID(busy, self.build.config_version)
        real.claim(object(), busy.access("exclusive"))
        self.expect_outcome(result=SUCCESS, state_string="tester skl-2")
        self.expect_property("tester", "skl-2")
        yield self.run_step()
        [run] = self.added
        assert [a.lockid.name for a in run.locks] == [lock_name("skl-2")] and run.bisect_tester == "skl"

    @defer.inlineCallbacks
    def test_local_needs_no_lock(self):
        self.start(["local"])
        self.expect_outcome(result=SUCCESS, state_string="tester local")
        yield self.run_step()
        assert self.added[0].locks == []

    def test_a_test_that_is_not_configured_is_refused(self):
        self.start(["local"], image_test="rm -rf /")
        self.expect_outcome(result=FAILURE, state_string="image_test: not a [[test]] with testers: 'rm -rf /' "
                            "(failure)")
        return self.run_step()
