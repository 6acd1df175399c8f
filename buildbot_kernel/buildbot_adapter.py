"""Every use of Buildbot's internals, in one module.

The steps, services and formatters need a few things Buildbot has no documented API for: which workers
are connected and busy, whether the master is shutting down, the database rows behind build requests
and buildsets, a named scheduler or service, a master lock's live state, state shared by the steps of
one build.  They ask here, never Buildbot's objects directly, so a Buildbot upgrade that moves one of
these is fixed in one file, and ``tests/unit/test_buildbot_adapter.py`` (a real master with a real
worker) says which one moved.

Everything that returns a Deferred runs on the reactor thread (Buildbot's database API is asynchronous).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from buildbot.plugins import util
from buildbot.worker.base import AbstractWorker, Worker
from twisted.internet import defer
from twisted.python import log

from buildbot_kernel.errors import BuildbotKernelError

BUILD_STATE_ATTR = "_buildbot_kernel_state"  # the per-build dict (see build_state)


class RemoteWorker(Worker):
    """Buildbot's worker, except that a connection that dies while the worker attaches is let go.

    Buildbot logs "cannot attach" and keeps the dead connection as the worker's: the broker was gone
    before PB could ask to hear of its end, so nothing ever says it ended, and a clean shutdown then
    waits "for worker to finish disconnecting" for ever.  Seen when a worker reconnected while a loaded
    master was starting (its next stop hung).  Here the end is delivered as the broker would have: the
    worker is detached, its locks are released and a shutdown goes through."""

    @defer.inlineCallbacks
    def attached(self, conn):
        try:
            yield AbstractWorker.attached(self, conn)
        except Exception as e:
            log.err(e, f"worker {self.name} cannot attach")
            broker = getattr(getattr(conn, "mind", None), "broker", None)
            if self.conn is conn and broker is not None and broker.disconnected:
                log.msg(f"worker {self.name}: its connection ended while it attached; detaching it")
                conn.detached(conn.mind)


class MissingScheduler(BuildbotKernelError, KeyError):
    """A scheduler the configuration should have made is not there (a configuration bug, not input)."""


# --- services and schedulers ------------------------------------------------------------------------------
def named_service(master, name: str):
    """A service of the configuration's ``services`` list, or None.

    Buildbot keeps those under ``master.service_manager``, not in ``master.namedServices`` (which holds
    the master's own managers), so a lookup there alone never finds them.
    """
    for parent in (getattr(master, "service_manager", None), master):
        found = getattr(parent, "namedServices", {}).get(name)
        if found is not None:
            return found
    return None


def scheduler(master, name: str):
    """The configured scheduler ``name`` (a Triggerable's ``trigger()``, a ForceScheduler's ``force()``,
    any scheduler's ``addBuildsetForSourceStamps()``)."""
    found = master.scheduler_manager.namedServices.get(name)
    if found is None:
        raise MissingScheduler(f"no scheduler named {name!r} in this master's configuration")
    return found


def poller_heads(master) -> dict:
    """(repository URL, branch) -> sha, as each GitPoller saw it on its last poll (``lastRev``)."""
    out = {}
    for svc in list(getattr(master, "change_svc", None) or []):
        revs, url = getattr(svc, "lastRev", None), getattr(svc, "repourl", None)
        if isinstance(revs, dict) and url:
            for ref, sha in revs.items():
                out[(url, ref.removeprefix("refs/heads/"))] = sha
    return out


def web_site(master):
    """The web UI's Twisted site (its ``resource`` is the root), or None before the www service made it."""
    return getattr(getattr(master, "www", None), "site", None)


def session_secret(master) -> str | None:
    """The secret the web UI signs its session cookies with (None before the www service started)."""
    return getattr(web_site(master), "session_secret", None)


def write_rest_json_on_the_reactor() -> bool:
    """Make the web API write its JSON answers on the reactor thread; True when this Buildbot needed it.

    Buildbot 4.2 and 4.3 encode a REST answer in a pool thread and call ``request.write`` from there.
    Twisted's transports are not thread-safe: when the reactor flushes the same connection at that
    moment, the body is dropped and the client gets the headers and then the end of the connection
    (``IncompleteRead``, or a reset), now and then, more often on a loaded master.  Buildbot fixed it
    after 4.3 (its issue 9065: "IncompleteRead exceptions on REST API requests since server 4.2.0"),
    where ``_write_json_data`` became a method; a Buildbot with the fix is left alone.

    The encoding stays in the thread (a large answer does not stall the reactor); only the header and
    the write hop to the reactor.  ``callFromThread`` runs calls in the order they were made, so the
    write runs before the thread's result comes back and Buildbot finishes the request.
    """
    from buildbot.www.rest import V2RootResource
    current = inspect.getattr_static(V2RootResource, "_write_json_data", None)
    if not isinstance(current, staticmethod):
        return False  # a fixed Buildbot (a method), or one that no longer has it
    if current.__func__ is _encode_in_thread_write_on_reactor:
        return True
    V2RootResource._write_json_data = staticmethod(_encode_in_thread_write_on_reactor)
    return True


def _encode_in_thread_write_on_reactor(request, encoder, data) -> None:
    from twisted.internet import reactor
    body = "".join(encoder.iterencode(data)).encode()
    reactor.callFromThread(_write_whole_body, request, body)


def _write_whole_body(request, body: bytes) -> None:
    from buildbot.www.rest import _is_request_finished
    if _is_request_finished(request):  # finished, or the client went away meanwhile
        return
    request.setHeader(b"content-length", b"%d" % len(body))
    if request.method != b"HEAD":
        request.write(body)


# --- the master and its workers ---------------------------------------------------------------------------
def shutting_down(master) -> bool:
    """A clean shutdown is under way: a step that stops now should end RETRY, so Buildbot puts its
    request back and it runs again after the restart."""
    return bool(getattr(master.botmaster, "shuttingDown", False))


def connected_workers(master, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that are connected now."""
    out = []
    for name in names:
        w = master.workers.workers.get(name)
        if w is not None and w.conn is not None:
            out.append(name)
    return out


def free_worker_slots(master, names: Iterable[str], default_max_builds: int) -> int:
    """Build slots of the connected workers among ``names`` not taken by a running build; a worker
    without ``max_builds`` counts as ``default_max_builds``."""
    free = 0
    for name in connected_workers(master, names):
        w = master.workers.workers[name]
        busy = sum(1 for wfb in w.workerforbuilders.values() if wfb.isBusy())
        free += (w.max_builds or default_max_builds) - busy
    return free


@defer.inlineCallbacks
def unclaimed_requests(master, exclude_builder: str | None = None):
    """How many build requests wait for a worker (not claimed, not complete), those of
    ``exclude_builder`` left out."""
    pending = yield master.db.buildrequests.getBuildRequests(claimed=False, complete=False)
    return sum(1 for r in pending if r.buildername != exclude_builder)


@defer.inlineCallbacks
def free_build_slots(master, names: Iterable[str], own_builder: str, default_max_builds: int):
    """What a bisect may start ahead: the free slots of its build workers (:func:`free_worker_slots`) less
    the requests already waiting for one, its own builder's left out (a queued bisect waits for its
    machine's lock on the control worker and takes no build slot)."""
    waiting = yield unclaimed_requests(master, exclude_builder=own_builder)
    return free_worker_slots(master, names, default_max_builds) - waiting


def real_lock(step, access) -> defer.Deferred:
    """The master's lock object behind ``access`` (``isAvailable``, ``claim``, ``release``,
    ``waitUntilMaybeAvailable``), for a step that takes locks itself while it runs (a class bisect's pool)."""
    return step.master.botmaster.getLockByID(access.lockid, step.build.config_version)


@defer.inlineCallbacks
def lock_available(step, access) -> defer.Deferred:
    """Could ``step``'s build take the master lock ``access`` (``util.MasterLock(...).access(mode)``) now?"""
    real = yield real_lock(step, access)
    return real.isAvailable(None, access)


def master_lock(name: str, mode: str = "exclusive"):
    """A step/builder ``locks=`` entry for the master lock ``name``."""
    return util.MasterLock(name).access(mode)


def master_id(master) -> int:
    return master.masterid


def start_queued_builds(master) -> None:
    """Offer every queued build request to this master's builders again (Buildbot does so on its own only
    when a request, a worker or a build comes or goes)."""
    master.botmaster.maybeStartBuildsForAllBuilders()


# --- one build ----------------------------------------------------------------------------------------------
def build_state(build) -> dict:
    """A dict the steps of one build share (a step object lives for one step only); gone with the build."""
    state = getattr(build, BUILD_STATE_ATTR, None)
    if state is None:
        state = {}
        setattr(build, BUILD_STATE_ATTR, state)
    return state


def add_steps_after_current(build, steps: list) -> None:
    """Steps decided at run time (one per bisect round, a file download per image file)."""
    build.addStepsAfterCurrentStep(list(steps))


def first_request(build):
    """The build request this build runs for: ``.bsid``, ``.submittedAt``."""
    return build.requests[0]


# --- build requests and buildsets -----------------------------------------------------------------------------
def request_property(request, name: str):
    """A property of a build request (its buildset's, as the scheduler or the force form set it), before
    any build exists: what a builder's ``canStartBuild`` decides by."""
    return request.properties.getProperty(name)


def request_master(request):
    """The master a build request object was loaded by (the one asking whether it may start it)."""
    return request.master


def cancel_requests(master, brids: Iterable[int], reason: str) -> None:
    """Buildbot's build request cancel: a queued request completes CANCELLED, a running build stops."""
    for brid in brids:
        master.mq.produce(("control", "buildrequests", str(brid), "cancel"), {"reason": reason})


@defer.inlineCallbacks
def waiting_parent(master, bsid: int):
    """The build that triggered buildset ``bsid`` and waits for it, as a data API dict; None when the
    buildset has no parent."""
    bs = yield master.db.buildsets.getBuildset(bsid)
    if bs is None or bs.parent_buildid is None:
        return None
    return (yield master.data.get(("builds", bs.parent_buildid)))


@defer.inlineCallbacks
def orphaned_requests(master, bisect_id: str, property_name: str, current_buildid: int):
    """Incomplete build requests of bisect ``bisect_id`` that carry ``property_name`` and were triggered by
    another build than ``current_buildid``: after a master crash, the dead master's requests are put back
    in the queue, but the build that waited for them is gone (it ended RETRY) and nobody reads their
    result.  [(brid, parent build id)]"""
    out = []
    for req in (yield master.db.buildrequests.getBuildRequests(complete=False)):
        props = yield master.db.buildsets.getBuildsetProperties(req.buildsetid)
        if property_name not in props or props.get("bisect_id", (None,))[0] != bisect_id:
            continue
        bs = yield master.db.buildsets.getBuildset(req.buildsetid)
        if bs is not None and bs.parent_buildid != current_buildid:
            out.append((req.buildrequestid, bs.parent_buildid))
    return out


@defer.inlineCallbacks
def revision_queued(master, builder: str, sha: str):
    """Is a request for commit ``sha`` on ``builder`` queued or running?"""
    builders = yield master.data.get(("builders",))
    bid = next((b["builderid"] for b in builders if b["name"] == builder), None)
    if bid is None:
        return False
    for req in (yield master.db.buildrequests.getBuildRequests(builderid=bid, complete=False)):
        bs = yield master.db.buildsets.getBuildset(req.buildsetid)
        for ssid in bs.sourcestamps if bs else []:
            ss = yield master.db.sourcestamps.getSourceStamp(ssid)
            if ss and ss.revision == sha:
                return True
    return False


@defer.inlineCallbacks
def last_build_of_requests(master, brids: list[int]):
    """The data API dict of the last build of the last of ``brids`` that has one, with its properties
    as plain values, or None."""
    for brid in reversed(brids):
        builds = yield master.data.get(("buildrequests", brid, "builds"))
        if builds:
            b = builds[-1]
            props = yield master.data.get(("builds", b["buildid"], "properties"))
            return {**b, "properties": {k: v[0] for k, v in (props or {}).items()}}
    return None


# --- state kept in the database (shared by every master of one database) ---------------------------------------
@defer.inlineCallbacks
def claim_once(master, obj: tuple[str, str], key: str, value: dict):
    """Store ``value`` under ``key`` unless something is stored there; the stored value either way
    (equal to ``value`` when this call won).  Atomic across masters sharing the database."""
    state = master.db.state
    oid = yield state.getObjectId(*obj)
    return (yield state.atomicCreateState(oid, key, lambda: value))


@defer.inlineCallbacks
def set_stored(master, obj: tuple[str, str], key: str, value) -> defer.Deferred:
    state = master.db.state
    oid = yield state.getObjectId(*obj)
    yield state.setState(oid, key, value)


# --- logs ------------------------------------------------------------------------------------------------------
@defer.inlineCallbacks
def step_raw_log(master, buildid: int, step_name: str, log_slug: str):
    """A step's log as the UI's "download" gives it (stream logs without their channel letters), or None."""
    got = yield master.data.get(("builds", buildid, "steps", step_name, "logs", log_slug, "raw"))
    return got["raw"] if got and "raw" in got else None


def build_steps(master, buildid: int) -> defer.Deferred:
    """The steps of a build (data API dicts) in order."""
    return master.data.get(("builds", buildid, "steps"))


def step_logs(master, stepid: int) -> defer.Deferred:
    """The logs of a step (data API dicts: ``logid``, ``name``, ``slug``, ``type``)."""
    return master.data.get(("steps", stepid, "logs"))


@defer.inlineCallbacks
def log_lines(master, log: dict, channels: str = "oe"):
    """A log's lines; for a stream log (``type`` "s") only those of ``channels`` (o out, e err, h header:
    the header lists the worker's whole environment), without their channel letter."""
    got = yield master.data.get(("logs", log["logid"], "contents"))
    chunks = got if isinstance(got, list) else [got] if got else []
    lines = "".join((c or {}).get("content") or "" for c in chunks).splitlines()
    if log.get("type") == "s":
        return [line[1:] for line in lines if line[:1] and line[:1] in channels]
    return lines


# --- several masters (README.md "Growing past one machine") -----------------------------------------------------
def database_engine(master):
    """The SQLAlchemy engine behind the master's database (its connection pool: reconnect handling)."""
    return master.db.pool.engine


def say_alive(master) -> defer.Deferred:
    """This master's heartbeat in the ``masters`` table (None before it has its id)."""
    if master.masterid is None:
        return defer.succeed(None)
    return master.data.updates.masterActive(name=master.name, masterid=master.masterid)


def all_masters(master) -> defer.Deferred:
    """Every master of the database (``id``, ``name``, ``active``, ``last_active``)."""
    return master.db.masters.getMasters()


@defer.inlineCallbacks
def deactivate_master(master, masterid: int, name: str):
    """Buildbot's own deactivation of another master (its builds end RETRY, its schedulers and change
    sources are released, every master is told); False when another survivor did it first."""
    changed = yield master.db.masters.setMasterState(masterid=masterid, active=False)
    if changed:
        yield master.data.rtypes.master._masterDeactivated(masterid, name)
    return bool(changed)


@defer.inlineCallbacks
def unclaim_requests_of(master, masterid: int):
    """Free the build requests another master had claimed and announce them.  Buildbot's housekeeping
    unclaims with the *calling* master's id (it was written for a master cleaning up after its own earlier
    run), which frees nothing of another master.  Returns the freed request ids."""
    requests = yield master.db.buildrequests.getBuildRequests(complete=False, claimed=masterid)
    brids = [r.buildrequestid for r in requests]
    if brids:
        yield master.db.buildrequests._unclaim_buildrequests_for_master(brids, masterid)
        yield master.data.rtypes.buildrequest.generateEvent(brids, "unclaimed")
    return brids


@defer.inlineCallbacks
def claim_freed_work(master):
    """Released schedulers and pollers, and unclaimed requests, are taken now instead of at their next
    poll (minutes)."""
    from buildbot.util.service import ClusteredBuildbotService

    for parent in (master.scheduler_manager, master.change_svc):
        for svc in list(parent):
            if isinstance(svc, ClusteredBuildbotService) and not svc.active:
                yield svc._activityPoll()
    start_queued_builds(master)


# --- the worker port ------------------------------------------------------------------------------------------
def worker_listeners(master) -> list:
    """The Twisted factories of the worker (PB) ports listening now, one per configured port string."""
    dispatchers = getattr(getattr(master, "pbmanager", None), "dispatchers", {}) or {}
    return [d.serverFactory for d in dispatchers.values() if getattr(d, "port", None) is not None]


def on_worker_login(master, callback) -> None:
    """``callback(transport)`` whenever a worker's name and password were accepted on a worker port,
    before Buildbot attaches it (``transport`` is the connection's, as the listener's protocol sees it).

    Buildbot's Dispatcher is the portal's realm: ``requestAvatar`` runs only after the credentials
    checked out.  Hooked on each dispatcher object (idempotent), so a Buildbot class is left alone."""
    dispatchers = getattr(getattr(master, "pbmanager", None), "dispatchers", {}) or {}
    for d in dispatchers.values():
        if "requestAvatar" in vars(d):
            continue
        original = d.requestAvatar

        def request_avatar(avatar_id, mind, *interfaces, _original=original):
            callback(getattr(getattr(mind, "broker", None), "transport", None))
            return _original(avatar_id, mind, *interfaces)

        d.requestAvatar = request_avatar
