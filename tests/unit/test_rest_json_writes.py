"""The web API writes its JSON answers on the reactor thread (buildbot_adapter.write_rest_json_on_the_reactor).

Buildbot 4.2/4.3 wrote them from a pool thread; under load the reactor flushed the same connection at
that moment and the body was lost (the client saw ``IncompleteRead``).  These tests run Buildbot's own
call, ``deferToThread(V2RootResource._write_json_data, ...)``, on a real reactor and say on which thread
the response was written.
"""

from __future__ import annotations

import json
import threading

from buildbot.www.rest import V2RootResource
from twisted.internet import defer, threads
from twisted.trial import unittest

from buildbot_kernel import buildbot_adapter as bb


class Request:
    """What ``_write_json_data`` touches of a Twisted request, noting the thread of each call."""

    def __init__(self, method=b"GET", finished=False):
        self.method, self.finished, self.channel = method, finished, object()
        self.calls: list[tuple] = []

    def setHeader(self, name, value):
        self.calls.append(("header", threading.get_ident(), name, value))

    def write(self, data):
        self.calls.append(("write", threading.get_ident(), data))


class RestJsonWrites(unittest.TestCase):
    def setUp(self):
        self.patched = bb.write_rest_json_on_the_reactor()

    @defer.inlineCallbacks
    def test_the_answer_is_written_whole_on_the_reactor_before_the_thread_returns(self):
        if not self.patched:
            raise unittest.SkipTest("this Buildbot writes on the reactor itself (fixed after 4.3)")
        reactor_thread = threading.get_ident()
        data = {"builds": [{"buildid": i, "state_string": "é"} for i in range(50)], "meta": {}}
        request = Request()
        yield threads.deferToThread(V2RootResource._write_json_data, request, json.JSONEncoder(), data)
        body = json.dumps(data).encode()
        self.assertEqual(request.calls, [("header", reactor_thread, b"content-length", b"%d" % len(body)),
                                         ("write", reactor_thread, body)])

    @defer.inlineCallbacks
    def test_head_gets_the_length_only_and_a_finished_request_nothing(self):
        if not self.patched:
            raise unittest.SkipTest("this Buildbot writes on the reactor itself (fixed after 4.3)")
        head, gone = Request(method=b"HEAD"), Request(finished=True)
        for request in (head, gone):
            yield threads.deferToThread(V2RootResource._write_json_data, request, json.JSONEncoder(), {"a": 1})
        self.assertEqual([c[0] for c in head.calls], ["header"])
        self.assertEqual(gone.calls, [])

    def test_installing_twice_keeps_one_wrapper(self):
        if not self.patched:
            raise unittest.SkipTest("this Buildbot writes on the reactor itself (fixed after 4.3)")
        first = V2RootResource.__dict__["_write_json_data"]
        self.assertEqual(bb.write_rest_json_on_the_reactor(), self.patched)
        self.assertIs(V2RootResource.__dict__["_write_json_data"].__func__, first.__func__)
