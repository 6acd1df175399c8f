"""What we rely on of Buildbot's internals (buildbot_kernel/buildbot_adapter.py), pinned against a real
master with a real worker connected over PB on loopback (Buildbot's own integration harness, in-process).

A Buildbot upgrade that moves one of these fails here, naming the adapter function to fix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from buildbot.config import BuilderConfig
from buildbot.plugins import schedulers, steps, util
from buildbot.process import buildstep
from buildbot.process.properties import Properties
from buildbot.process.results import CANCELLED, SUCCESS
from buildbot.test.util.integration import RunMasterBase
from buildbot.util import service
from twisted.internet import defer, reactor, task

from buildbot_kernel import buildbot_adapter as bb

SHA = "1" * 40
OTHER = "2" * 40
DEADLINE = 30.0


class Gate(buildstep.BuildStep):
    """Holds its build until the test fires the Deferred it leaves in ``gates``."""

    def __init__(self, gates: list, **kwargs):
        self.gates = gates
        super().__init__(**kwargs)

    def run(self):
        d = defer.Deferred()
        self.gates.append(d)
        return d


class WriteState(buildstep.BuildStep):
    name = "write-state"

    def run(self):
        bb.build_state(self.build)["n"] = 41
        bb.add_steps_after_current(self.build, [ReadState()])
        return defer.succeed(SUCCESS)


class ReadState(buildstep.BuildStep):
    name = "read-state"

    def run(self):
        self.setProperty("seen", bb.build_state(self.build)["n"] + 1, "test")
        return defer.succeed(SUCCESS)


class Probe(buildstep.BuildStep):
    """Asks the adapter what a step can ask, and keeps the answers as properties."""

    name = "probe"

    @defer.inlineCallbacks
    def run(self):
        self.setProperty("lock_m1", (yield bb.lock_available(self, bb.master_lock("m1"))), "test")
        self.setProperty("lock_m2", (yield bb.lock_available(self, bb.master_lock("m2"))), "test")
        parent = yield bb.waiting_parent(self.master, bb.first_request(self.build).bsid)
        self.setProperty("parent", parent["buildid"] if parent else None, "test")
        return SUCCESS


class StartChild(buildstep.BuildStep):
    """Triggers a waited-for child build of this one on the "trig" scheduler."""

    name = "start-child"

    @defer.inlineCallbacks
    def run(self):
        _, done = bb.scheduler(self.master, "trig").trigger(
            waited_for=True, sourcestamps=[], set_props=Properties(), parent_buildid=self.build.buildid,
            parent_relationship="test")
        yield done
        return SUCCESS


class Named(service.BuildbotService):
    name = "probe-service"


class AdapterTest(RunMasterBase):
    proto = "pb"

    @defer.inlineCallbacks
    def setUp(self):
        self.gates: list[defer.Deferred] = []
        self.asked: list[tuple] = []  # what the "gated" builder's canStartBuild read of each request
        self.gate_open = False
        probe = util.BuildFactory([WriteState(), Probe(),
                                   steps.ShellCommand(name="say", command="echo hello; echo oops >&2")])
        config = {
            "builders": [
                BuilderConfig(name="hold", workernames=["local1"],
                              factory=util.BuildFactory([Gate(self.gates, name="gate",
                                                              locks=[bb.master_lock("m1")])])),
                BuilderConfig(name="probe", workernames=["local1"], factory=probe),
                BuilderConfig(name="parent", workernames=["local1"], factory=util.BuildFactory([StartChild()])),
                BuilderConfig(name="never", workernames=["local1"], factory=util.BuildFactory([]),
                              canStartBuild=lambda *a: False),
                BuilderConfig(name="gated", workernames=["local1"], factory=util.BuildFactory([]),
                              canStartBuild=self._gate),
            ],
            "schedulers": [
                schedulers.ForceScheduler(name="force", builderNames=["hold", "probe", "parent"]),
                schedulers.Triggerable(name="trig", builderNames=["probe"]),
                schedulers.Triggerable(name="queue", builderNames=["never"]),
                schedulers.Triggerable(name="gated", builderNames=["gated"]),
            ],
            "services": [Named()],
        }
        yield self.setup_master(config)
        yield self.until(lambda: bb.connected_workers(self.master, ["local1"]) == ["local1"], "the worker connects")

    def _gate(self, builder, workerforbuilder, request) -> bool:
        self.asked.append((bb.request_property(request, "tester"), bb.request_master(request) is self.master))
        return self.gate_open

    def mktemp(self) -> str:
        """The master's and the worker's directories: a fresh temporary directory, not one under the
        current directory (trial's default)."""
        path = tempfile.mkdtemp(prefix="bbk-adapter-")
        self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        return os.path.join(path, "d")  # not made yet: Buildbot's harness makes it

    @defer.inlineCallbacks
    def until(self, predicate, what: str):
        """Poll ``predicate`` (may return a Deferred) on the reactor until true or the deadline."""
        end = time.monotonic() + DEADLINE
        while True:
            got = yield defer.maybeDeferred(predicate)
            if got:
                return got
            if time.monotonic() > end:
                raise AssertionError(f"not within {DEADLINE} s: {what}")
            yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def force(self, builder: str):
        """The build request id of a forced build on ``builder``."""
        _, brids = yield bb.scheduler(self.master, "force").force("tester", builderNames=[builder])
        [brid] = brids.values()
        return brid

    @defer.inlineCallbacks
    def finished_build(self, brid: int):
        @defer.inlineCallbacks
        def done():
            builds = yield self.master.data.get(("buildrequests", brid, "builds"))
            return builds[-1] if builds and builds[-1]["complete"] else None
        return (yield self.until(done, f"build request {brid} finishes"))

    @defer.inlineCallbacks
    def props(self, buildid: int):
        return {k: v[0] for k, v in (yield self.master.data.get(("builds", buildid, "properties"))).items()}

    def test_schedulers_and_services_are_found_by_name(self):
        assert bb.scheduler(self.master, "trig").name == "trig"
        with self.assertRaises(bb.MissingScheduler) as e:
            bb.scheduler(self.master, "nope")
        assert "nope" in str(e.exception)
        assert isinstance(bb.named_service(self.master, "probe-service"), Named)
        assert bb.named_service(self.master, "no-such-service") is None
        assert bb.poller_heads(self.master) == {}  # no GitPoller configured
        assert bb.master_id(self.master) >= 1

    @defer.inlineCallbacks
    def test_a_request_its_builder_refuses_stays_queued_until_offered_again(self):
        """What master/farm_route.py relies on: ``canStartBuild`` reads the request's properties and its
        master; a refused request is neither claimed nor failed; ``start_queued_builds`` offers it again."""
        props = Properties()
        props.setProperty("tester", "m1", "test")
        ids, done = bb.scheduler(self.master, "gated").trigger(waited_for=False, sourcestamps=[], set_props=props)
        done.addErrback(lambda f: None)
        _, brids = yield ids
        [brid] = brids.values()
        yield self.until(lambda: self.asked, "the builder to ask about the request")
        req = yield self.master.data.get(("buildrequests", brid))
        assert not req["claimed"] and not req["complete"], req
        assert not (yield self.master.data.get(("buildrequests", brid, "builds")))
        self.gate_open = True
        bb.start_queued_builds(self.master)
        build = yield self.finished_build(brid)
        assert build["results"] == SUCCESS
        assert set(self.asked) == {("m1", True)}

    @defer.inlineCallbacks
    def test_the_failover_calls_on_the_masters_table(self):
        """What the failover service of several masters does with another master's row."""
        assert bb.database_engine(self.master).dialect.name == "sqlite"
        yield bb.say_alive(self.master)
        other = yield self.master.db.masters.findMasterId(name="other-master")
        yield self.master.db.masters.setMasterState(masterid=other, active=True)
        rows = {m.name: m for m in (yield bb.all_masters(self.master))}
        assert rows["other-master"].active and rows["other-master"].last_active is not None
        assert any(m.id == bb.master_id(self.master) and m.active for m in rows.values())
        assert (yield bb.unclaim_requests_of(self.master, other)) == []  # it claimed nothing
        assert (yield bb.deactivate_master(self.master, other, "other-master")) is True
        assert (yield bb.deactivate_master(self.master, other, "other-master")) is False  # done already
        rows = {m.name: m for m in (yield bb.all_masters(self.master))}
        assert not rows["other-master"].active
        yield bb.claim_freed_work(self.master)  # nothing released: a no-op that must not fail

    @defer.inlineCallbacks
    def test_slots_locks_and_shutdown_while_a_build_runs(self):
        assert bb.connected_workers(self.master, ["ghost", "local1"]) == ["local1"]
        assert bb.free_worker_slots(self.master, ["local1", "ghost"], default_max_builds=2) == 2
        brid_hold = yield self.force("hold")
        yield self.until(lambda: self.gates, "the hold build reaches its gate")
        assert bb.free_worker_slots(self.master, ["local1"], default_max_builds=2) == 1
        assert bb.free_worker_slots(self.master, ["local1"], default_max_builds=5) == 4
        assert (yield bb.free_build_slots(self.master, ["local1"], "bisect", default_max_builds=2)) == 1

        brid_probe = yield self.force("probe")
        build = yield self.finished_build(brid_probe)
        props = yield self.props(build["buildid"])
        assert (props["lock_m1"], props["lock_m2"]) == (False, True)  # the hold build has m1
        assert props["parent"] is None  # forced: no parent build waits for it

        assert bb.shutting_down(self.master) is False
        shutdown = self.master.botmaster.cleanShutdown(quickMode=False, stopReactor=False)
        assert bb.shutting_down(self.master) is True
        self.master.botmaster.cancelCleanShutdown()
        assert bb.shutting_down(self.master) is False

        self.gates[0].callback(SUCCESS)  # the shutdown waited for the running build: it ends now too
        yield shutdown
        build = yield self.finished_build(brid_hold)
        assert build["results"] == SUCCESS
        yield self.until(lambda: bb.free_worker_slots(self.master, ["local1"], 2) == 2, "the slot is free again")

    @defer.inlineCallbacks
    def test_build_state_added_steps_and_logs(self):
        brid_probe = yield self.force("probe")
        build = yield self.finished_build(brid_probe)
        assert build["results"] == SUCCESS
        assert (yield self.props(build["buildid"]))["seen"] == 42
        names = [s["name"] for s in (yield bb.build_steps(self.master, build["buildid"]))]
        assert names.index("write-state") < names.index("read-state") < names.index("probe")
        [say] = [s for s in (yield bb.build_steps(self.master, build["buildid"])) if s["name"] == "say"]
        [stdio] = yield bb.step_logs(self.master, say["stepid"])
        assert (yield bb.log_lines(self.master, stdio, channels="oe")) == ["hello", "oops"]
        assert (yield bb.log_lines(self.master, stdio, channels="o")) == ["hello"]
        raw = yield bb.step_raw_log(self.master, build["buildid"], "say", "stdio")
        assert "hello\n" in raw and "oops\n" in raw
        assert (yield bb.step_raw_log(self.master, build["buildid"], "say", "no-such-log")) is None

    @defer.inlineCallbacks
    def test_a_triggered_build_finds_the_build_waiting_for_it(self):
        brid_parent = yield self.force("parent")
        parent = yield self.finished_build(brid_parent)
        assert parent["results"] == SUCCESS
        children = yield self.master.data.get(("builds",))
        [child] = [b for b in children if b["buildid"] != parent["buildid"]]
        assert (yield self.props(child["buildid"]))["parent"] == parent["buildid"]
        last = yield bb.last_build_of_requests(self.master, [child["buildrequestid"]])
        assert last["buildid"] == child["buildid"] and last["properties"]["parent"] == parent["buildid"]

    @defer.inlineCallbacks
    def test_queued_requests_are_seen_and_cancelled(self):
        props = Properties()
        props.setProperty("bisect_id", "b1", "test")
        props.setProperty("bisect_sha", SHA, "test")
        _, done = bb.scheduler(self.master, "queue").trigger(
            waited_for=False, set_props=props,
            sourcestamps=[{"codebase": "", "repository": "r", "branch": "main", "revision": SHA, "project": "p"}])
        done.addErrback(lambda f: None)
        assert (yield self.until(lambda: bb.revision_queued(self.master, "never", SHA), "the request is queued"))
        assert not (yield bb.revision_queued(self.master, "never", OTHER))
        assert not (yield bb.revision_queued(self.master, "no-such-builder", SHA))
        assert (yield bb.unclaimed_requests(self.master)) == 1
        assert (yield bb.unclaimed_requests(self.master, exclude_builder="never")) == 0
        # the queued request takes the one free slot a bisect would otherwise build ahead in
        assert (yield bb.free_build_slots(self.master, ["local1"], "probe", default_max_builds=1)) == 0
        assert (yield bb.free_build_slots(self.master, ["local1"], "never", default_max_builds=1)) == 1
        orphans = yield bb.orphaned_requests(self.master, "b1", "bisect_sha", current_buildid=123)
        assert [parent for _, parent in orphans] == [None]
        assert (yield bb.orphaned_requests(self.master, "b2", "bisect_sha", current_buildid=123)) == []

        bb.cancel_requests(self.master, [brid for brid, _ in orphans], "not needed")
        [req] = yield self.until(lambda: self.master.data.get(("buildrequests",), filters=[]), "requests")

        @defer.inlineCallbacks
        def cancelled():
            r = yield self.master.data.get(("buildrequests", req["buildrequestid"]))
            return r["complete"] and r["results"] == CANCELLED
        yield self.until(cancelled, "the request completes CANCELLED")
        assert not (yield bb.revision_queued(self.master, "never", SHA))
        assert (yield bb.unclaimed_requests(self.master)) == 0

    @defer.inlineCallbacks
    def test_claim_once_is_first_come(self):
        obj = ("buildbot-kernel-test", "Claims")
        first = yield bb.claim_once(self.master, obj, "k", {"by": 1})
        second = yield bb.claim_once(self.master, obj, "k", {"by": 2})
        assert first == second == {"by": 1}
        yield bb.set_stored(self.master, obj, "k", {"by": 1, "done": True})
        assert (yield bb.claim_once(self.master, obj, "k", {"by": 3})) == {"by": 1, "done": True}
