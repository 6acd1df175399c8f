"""Several masters on one database: each says it is alive, and the work of one that went silent moves on.

Buildbot beats once a minute and declares a master dead only after ten silent minutes; until then a
crashed master's bisect, branch builds, pollers and schedulers wait for it.  This service beats every
third of ``[server] master_timeout`` and, past that timeout, deactivates the silent master with
Buildbot's own housekeeping (its builds end RETRY, its build requests are unclaimed, its schedulers and
pollers are released), then lets this master claim what was freed at once instead of at the next
five-minute poll.  README.md "Growing past one machine" says what an admin sees.
"""

from __future__ import annotations

from buildbot.util import datetime2epoch
from buildbot.util.service import BuildbotService
from twisted.internet import defer, task
from twisted.python import log

from buildbot_kernel import buildbot_adapter as bb

FAILOVER_SERVICE = "master-failover"


def silent_masters(masters, me: int, now: float, timeout: float) -> list:
    """The other active masters whose last heartbeat is older than ``timeout`` seconds."""
    out = []
    for m in masters:
        if m.id == me or not m.active or m.last_active is None:
            continue
        if datetime2epoch(m.last_active) < now - timeout:
            out.append(m)
    return out


class MasterFailover(BuildbotService):
    name = FAILOVER_SERVICE

    def checkConfig(self, timeout, **kwargs):
        if not isinstance(timeout, int) or timeout < 15:
            raise ValueError(f"timeout is {timeout!r}; expected whole seconds >= 15")
        return super().checkConfig(**kwargs)

    def __init__(self, *args, **kwargs):
        self.timeout = 60
        self._loop: task.LoopingCall | None = None
        self._takeover: defer.Deferred | None = None  # one at a time, beside the heartbeat
        super().__init__(*args, **kwargs)

    @defer.inlineCallbacks
    def reconfigService(self, timeout, **kwargs):
        self.timeout = timeout
        self._stop_loop()
        self._loop = task.LoopingCall(self._beat_logged)
        self._loop.clock = self.master.reactor
        self._loop.start(timeout / 3, now=True)
        yield super().reconfigService(**kwargs)

    def _stop_loop(self):
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    @defer.inlineCallbacks
    def _beat_logged(self):
        """The loop waits for the heartbeat only: a long takeover must not make this master look silent."""
        try:
            yield self.beat()
        except Exception:
            log.err(None, "master failover: heartbeat failed (retried at the next beat)")
            return
        if self._takeover is None:
            self._takeover = self.take_over()
            self._takeover.addErrback(log.err, "master failover: takeover failed (retried at the next beat)")
            self._takeover.addBoth(self._takeover_done)

    def _takeover_done(self, result):
        self._takeover = None
        return result

    def beat(self):
        """Say this master is alive."""
        return bb.say_alive(self.master)

    @defer.inlineCallbacks
    def take_over(self):
        """Deactivate the silent masters; claim what they held.  Returns their names."""
        master = self.master
        if master.masterid is None:
            return []
        masters = yield bb.all_masters(master)
        taken = []
        for m in silent_masters(masters, master.masterid, master.reactor.seconds(), self.timeout):
            if not (yield bb.deactivate_master(master, m.id, m.name)):  # another survivor did it first
                continue
            log.msg(f"master failover: {m.name} silent for more than {self.timeout}s: taking over its work")
            brids = yield bb.unclaim_requests_of(master, m.id)
            if brids:
                log.msg(f"master failover: unclaimed build requests {brids}")
            taken.append(m.name)
        if taken:
            yield bb.claim_freed_work(master)
        return taken

    @defer.inlineCallbacks
    def stopService(self):
        self._stop_loop()
        yield super().stopService()


def add_cluster(c: dict, router_url: str, timeout: int) -> None:
    """One master of several: Buildbot's WAMP message queue through the shared router, cluster mode (each
    master may lack builders or workers the others have), and the failover heartbeat."""
    c["multiMaster"] = True
    c["mq"] = {"type": "wamp", "router_url": router_url, "realm": "buildbot", "wamp_debug_level": "error"}
    c["services"].append(MasterFailover(timeout=timeout))
