"""Builds a bisect starts on other builders (kernel builds, test runs), without blocking on them.

Buildbot's Trigger step waits for its builds inside one step; the bisect needs more: start a test, start
two builds ahead while it runs, wait for the test only, then keep or cancel the builds. So it calls the
Triggerable schedulers itself and keeps a :class:`SubBuild` handle per buildset, which any number of
waiters can wait on and which can be cancelled whether it is queued or running.
"""

from __future__ import annotations

from buildbot.process.properties import Properties
from buildbot.process.results import CANCELLED, RETRY
from twisted.internet import defer
from twisted.python import failure

from buildbot_kernel import buildbot_adapter as bb
from buildbot_kernel.buildbot_adapter import cancel_requests, orphaned_requests, waiting_parent
from buildbot_kernel.errors import BuildbotKernelError

# re-exported for steps/bisect.py, which imports them from here
__all__ = ["Interrupted", "SubBuild", "Waiter", "cancel_requests", "orphaned_requests", "waiting_parent"]


class Interrupted(BuildbotKernelError):
    """The bisect build was stopped (a user, or a master shutdown) while it waited."""


class SubBuild:
    def __init__(self, master, label: str):
        self.master = master
        self.label = label
        self.bsid: int | None = None
        self.brids: list[int] = []
        self.results: int | None = None
        self.cancelled = False
        self._done = False
        self._waiters: list[defer.Deferred] = []

    @classmethod
    def trigger(cls, step, scheduler_name: str, label: str, sourcestamps: list[dict] | None = None,
                properties: dict | None = None, reason: str = "") -> SubBuild:
        """Start a buildset through the named Triggerable scheduler, linked to ``step``'s build."""
        handle = cls(step.master, label)
        sched = bb.scheduler(step.master, scheduler_name)
        props = Properties()
        # source "Scheduler": Buildbot compares those when deciding to collapse queued requests, so a
        # request for one commit is never collapsed into a later one for another commit
        for k, v in (properties or {}).items():
            props.setProperty(k, v, "Scheduler")
        props.setProperty("reason", reason or label, "bisect")
        ids_d, results_d = sched.trigger(waited_for=True, sourcestamps=sourcestamps or [], set_props=props,
                                         parent_buildid=step.build.buildid, parent_relationship="bisect")

        def got_ids(ids):
            handle.bsid, brids = ids
            handle.brids = sorted(brids.values())
            if handle.cancelled:
                handle._send_cancel("cancelled by the bisect")
        ids_d.addCallbacks(got_ids, handle._fail)
        results_d.addCallbacks(lambda r: handle._finish(r[0]), handle._fail)
        return handle

    @property
    def done(self) -> bool:
        return self._done

    def wait(self) -> defer.Deferred:
        """Fires with the buildset's results code (SUCCESS, FAILURE, CANCELLED, ...)."""
        if self._done:
            return defer.succeed(self.results)
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    def cancel(self, reason: str) -> None:
        """Cancel whether queued or running; harmless once finished."""
        if self._done or self.cancelled:
            return
        self.cancelled = True
        if self.brids:
            self._send_cancel(reason)

    def _send_cancel(self, reason: str) -> None:
        cancel_requests(self.master, self.brids, reason)

    def _finish(self, results) -> None:
        self.results, self._done = results, True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(results)

    def _fail(self, f: failure.Failure) -> None:
        # the Triggerable scheduler stops before the build completes: a master shutdown
        self._finish(RETRY if not self.cancelled else CANCELLED)

    def last_build(self) -> defer.Deferred:
        """The data API dict of the (last) build of this buildset, with its properties, or None."""
        return bb.last_build_of_requests(self.master, self.brids)


class Waiter:
    """Waits that end early when the bisect build is interrupted (stopBuild, master shutdown)."""

    def __init__(self):
        self.interrupted: str | None = None
        self._pending: set[defer.Deferred] = set()

    def wait(self, d: defer.Deferred) -> defer.Deferred:
        if self.interrupted:
            return defer.fail(Interrupted(self.interrupted))
        out = defer.Deferred()
        self._pending.add(out)

        def fire(result):
            if out in self._pending:
                self._pending.discard(out)
                out.callback(result) if not isinstance(result, failure.Failure) else out.errback(result)
            return None
        d.addBoth(fire)
        return out

    def interrupt(self, reason: str) -> None:
        self.interrupted = reason or "interrupted"
        pending, self._pending = self._pending, set()
        for d in pending:
            d.errback(Interrupted(self.interrupted))
