"""Schedulers Buildbot does not ship."""

from __future__ import annotations

from buildbot.schedulers.base import BaseScheduler
from twisted.internet import defer


class AtStartup(BaseScheduler):
    """Adds one buildset when the master (re)starts; used to reconcile branch heads on first start."""

    def __init__(self, name, builderNames, **kwargs):
        super().__init__(name, builderNames, **kwargs)
        self._fired = False

    @defer.inlineCallbacks
    def activate(self):
        yield super().activate()
        if self.enabled and not self._fired:
            self._fired = True
            yield self.addBuildsetForSourceStamps(sourcestamps=[], reason="master started",
                                                  builderNames=self.builderNames)
