"""Schedulers Buildbot does not ship."""

from __future__ import annotations

from buildbot.schedulers.base import ReconfigurableBaseScheduler
from twisted.internet import defer


class AtStartup(ReconfigurableBaseScheduler):
    """Adds one buildset when the master (re)starts; used to reconcile branch heads on first start."""

    def __init__(self, name, builderNames, **kwargs):
        super().__init__(name=name, builderNames=builderNames, **kwargs)
        self._fired = False

    @defer.inlineCallbacks
    def activate(self):
        yield super().activate()
        if self.enabled and not self._fired:
            self._fired = True
            # "WithDefaults" gives the buildset the default codebase's sourcestamp; a buildset with no
            # sourcestamp at all makes Buildbot 4.3 run an empty INSERT that SQLite rejects on restart.
            yield self.addBuildsetForSourceStampsWithDefaults(reason="master started", sourcestamps=[],
                                                              builderNames=self.builderNames)
