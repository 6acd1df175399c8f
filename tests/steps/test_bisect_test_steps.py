"""The bisect-test builder's command step against scripted worker answers: exit statuses and timeouts."""

from __future__ import annotations

from buildbot.process.results import EXCEPTION, SUCCESS, WARNINGS
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import ExpectShell, TestBuildStepMixin
from twisted.trial import unittest

from buildbot_kernel.steps.bisect_test import RunTestCommand

SHA = "18097b4c2a6d93e1f3c7a4bbd0e6f9a1b2c3d4e5"


class TestRunTestCommand(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    def setUp(self):
        self.setup_test_reactor()
        return self.setup_test_build_step()

    def start(self, **props):
        self.setup_step(RunTestCommand(name="test-command"))  # the fake data API wants an identifier
        for k, v in {"builddir": "/w/bisect-test", "bisect_sha": SHA, "bisect_image": "img",
                     "bisect_image_url": "http://x/b/img/", "bisect_command": "./t.sh", **props}.items():
            self.build.setProperty(k, v, "test")

    def expect(self, **kw):
        return ExpectShell(workdir="bisect", log_environ=False, command=["/bin/sh", "-c", "./t.sh"], **kw,
                           env={"BISECT_SHA": SHA, "BISECT_IMAGE": "img", "BISECT_IMAGE_URL": "http://x/b/img/",
                                "BISECT_IMAGE_DIR": "/w/bisect-test/bisect/image"})

    def test_a_command_killed_at_the_timeout_is_skip(self):
        self.start(bisect_timeout=30)
        self.expect_commands(self.expect(max_time=30).update("failure_reason", "timeout").exit(-1))
        self.expect_outcome(result=WARNINGS, state_string="killed at the timeout: skip (warnings) (timed out)")
        self.expect_property("bisect_exit", 125)
        return self.run_step()

    def test_exit_status_is_the_verdict(self):
        self.start()
        self.expect_commands(self.expect().exit(1))
        self.expect_outcome(result=SUCCESS, state_string="exit 1: bad")  # a verdict, not a failure
        self.expect_property("bisect_exit", 1)
        return self.run_step()

    def test_good(self):
        self.start()
        self.expect_commands(self.expect().exit(0))
        self.expect_outcome(result=SUCCESS, state_string="exit 0: good")
        return self.run_step()

    def test_125_is_skip(self):
        self.start()
        self.expect_commands(self.expect().exit(125))
        self.expect_outcome(result=WARNINGS, state_string="exit 125: skip (warnings)")
        self.expect_property("bisect_exit", 125)
        return self.run_step()

    def test_above_127_aborts_and_a_signal_counts_as_128_plus_n(self):
        self.start()
        self.expect_commands(self.expect().exit(-9))
        self.expect_outcome(result=EXCEPTION, state_string="exit 137: aborts the bisect (exception)")
        self.expect_property("bisect_exit", 137)
        return self.run_step()
