"""A worker whose connection ends while it attaches: Buildbot kept the dead connection, and the master's
clean shutdown waited for it for ever (buildbot_adapter.RemoteWorker)."""

from __future__ import annotations

from buildbot.test.fake import fakemaster
from buildbot.test.reactor import TestReactorMixin
from buildbot.worker.protocols import pb as bbpb
from twisted.internet import defer
from twisted.python import failure
from twisted.spread import pb
from twisted.trial import unittest

from buildbot_kernel.buildbot_adapter import RemoteWorker


def dead_connection(master, worker) -> bbpb.Connection:
    """Buildbot's PB connection over a real Twisted broker whose TCP connection is already gone: any call
    raises DeadReferenceError ("Calling Stale Broker"), as in the hung shutdown."""
    broker = pb.Broker()
    broker.connectionLost(failure.Failure(ConnectionError("gone")))
    mind = pb.RemoteReference(None, broker, 1, 0)
    conn = bbpb.Connection(master, worker, mind)
    conn.info = {"basedir": "/w", "system": "posix"}
    return conn


class TestAttachOnADeadConnection(TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.setup_test_reactor()
        self.master = yield fakemaster.make_master(self, wantData=True)
        self.worker = RemoteWorker("w1", "pw")
        yield self.worker.setServiceParent(self.master.workers)
        yield self.master.startService()

    @defer.inlineCallbacks
    def test_the_worker_is_detached_and_disconnect_returns_at_once(self):
        conn = dead_connection(self.master, self.worker)
        yield self.worker.attached(conn)
        self.assertEqual(len(self.flushLoggedErrors(pb.DeadReferenceError)), 1)  # "cannot attach", logged
        self.assertIsNone(self.worker.conn)
        d = self.worker.disconnect()
        self.assertTrue(d.called, "disconnect waits for a connection that is gone (the shutdown hang)")
