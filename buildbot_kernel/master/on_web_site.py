"""A service that changes Buildbot's web site once it exists, and undoes that when it stops.

The configured services start before Buildbot's web service makes its site at the first start, so the
change is retried every 50 ms until the site is there.  Stopping (also at a reconfig that drops the
service) gives the site back as Buildbot made it.
"""

from __future__ import annotations

from buildbot.util.service import BuildbotService
from twisted.internet import task

from buildbot_kernel.buildbot_adapter import web_site


class OnWebSite(BuildbotService):
    """Subclasses say what to put on the site (``install``) and how to take it off (``uninstall``)."""

    _loop = None

    def install(self, site) -> None:
        raise NotImplementedError

    def uninstall(self, site) -> None:
        raise NotImplementedError

    def startService(self):
        self._loop = task.LoopingCall(self._try_install)
        self._loop.clock = self.master.reactor
        self._loop.start(0.05, now=True)
        return super().startService()

    def _try_install(self) -> None:
        site = web_site(self.master)
        if site is None:
            return  # not made yet: the next turn
        self.install(site)
        self._loop.stop()

    def stopService(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        site = web_site(self.master)
        if site is not None:
            self.uninstall(site)
        return super().stopService()
