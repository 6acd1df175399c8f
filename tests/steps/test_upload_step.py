"""A stop during the image upload lets the transfer end (steps/publish.py UploadImage says why)."""

from __future__ import annotations

from buildbot.process.buildstep import create_step_from_step_or_factory
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from buildbot_kernel.steps.publish import UploadImage


class _Transfer:
    """Stands in for the running uploadDirectory command: records whether the step cut it."""

    interrupted = None

    def interrupt(self, why):
        self.interrupted = why
        return defer.succeed(None)


def _step():
    step = create_step_from_step_or_factory(UploadImage(workersrc="pkg", masterdest="incoming"))  # as a build does
    step.cmd = _Transfer()
    step.logs_added = []
    step.addCompleteLog = lambda name, text: defer.succeed(step.logs_added.append((name, text)))
    return step


def test_a_stop_lets_the_upload_end_and_says_so():
    step = _step()
    d = step.interrupt("the bisect build was stopped")
    assert d.called and step.cmd.interrupted is None
    assert step.logs_added[0][0] == "interrupt" and "the bisect build was stopped" in step.logs_added[0][1]


def test_a_lost_worker_still_ends_it_at_once():
    step = _step()
    lost = Failure(ConnectionLost())
    step.interrupt(lost)
    assert step.cmd.interrupted is lost
