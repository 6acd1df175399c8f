"""The heads builder's first step per repository: fill (first start) or fetch the host's object store.

The store is the bisect mirror (:mod:`buildbot_kernel.bisect.mirror` says why it, and not Buildbot's
poller repository, holds the objects). Filling it here, before any branch build is scheduled, makes the
first start fetch the history once: the workers on this host then borrow it instead of cloning, and
the poller's repository drops its copy. git's progress is the step's ``git`` log.
"""

from __future__ import annotations

from buildbot.process import buildstep
from buildbot.process.results import SUCCESS, WARNINGS
from twisted.internet import defer, threads

from buildbot_kernel.bisect.engine import BisectInputError
from buildbot_kernel.bisect.mirror import update_mirror
from buildbot_kernel.util import identifier


class UpdateStore(buildstep.BuildStep):
    """A failure is a warning, not a failure: builds still work (each checkout then fetches on its own)."""

    haltOnFailure = False
    flunkOnFailure = False

    def __init__(self, repository: str, url: str, state_dir: str, **kwargs):
        self.repository, self.url, self.state_dir = repository, url, state_dir
        kwargs.setdefault("name", identifier(f"store-{repository}"))
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        log = yield self.addLog("git")
        self.descriptionDone = [f"fetching {self.repository}"]
        yield self.updateSummary()

        def progress(line: str) -> None:  # called in the git thread
            self.master.reactor.callFromThread(log.addStdout, line + "\n")

        try:
            yield threads.deferToThread(update_mirror, self.state_dir, self.repository, self.url, progress)
        except BisectInputError as e:
            yield log.addStderr(e.message + "\n")
            self.descriptionDone = [f"object store not updated: {e.message}"[:200]]
            return WARNINGS
        self.descriptionDone = [f"{self.repository} history up to date"]
        return SUCCESS
