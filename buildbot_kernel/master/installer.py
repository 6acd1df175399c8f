"""A service that changes something of Buildbot's own once Buildbot made it.

The configured services start before the web service makes its site at the first start, and the worker
ports listen only once the workers are registered; a service that wraps either has to wait for it.
"""

from __future__ import annotations

from buildbot.util.service import BuildbotService
from twisted.internet import defer, task

FIRST_POLL = 0.05  # seconds between two looks until the thing exists (the master is starting)


class InstallWhenReady(BuildbotService):
    """Calls :meth:`install` every :data:`FIRST_POLL` seconds until it returns True, then every
    ``watch_every`` seconds if that is set (a reconfig can make new listeners), else never again."""

    watch_every: float | None = None

    def install(self) -> bool:
        raise NotImplementedError

    @defer.inlineCallbacks
    def startService(self):
        yield super().startService()  # configured first: install() reads what reconfigService set
        self._loop = task.LoopingCall(self._turn)
        self._loop.clock = self.master.reactor
        self._loop.start(FIRST_POLL, now=True)

    def _turn(self) -> None:
        if not self.install():
            return
        self._loop.stop()
        if self.watch_every is not None:
            self._loop = task.LoopingCall(self.install)
            self._loop.clock = self.master.reactor
            self._loop.start(self.watch_every, now=False)

    def stopService(self):
        if getattr(self, "_loop", None) is not None and self._loop.running:
            self._loop.stop()
        return super().stopService()
