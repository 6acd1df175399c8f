"""Buildbot's own listeners, the web UI and the worker port, against a real master on loopback: no
request body past the web UI's limit is read, slow or numerous connections are closed or refused before
they take the master's descriptors, and what should stay open (websockets, a logged-in worker) does."""

from __future__ import annotations

import base64
import os
import resource
import socket
import time

import pytest
from integration.harness import FixtureRepo, Master, Worker, free_port, settings_text, wait_for

from buildbot_kernel.imagetree.httpguard import HEAD_TIMEOUT
from buildbot_kernel.master.fdlimit import ROOM, WANTED
from buildbot_kernel.master.listeners import WEB_MAX_BODY, WEB_PER_ADDRESS

pytestmark = pytest.mark.integration
BRANCH = "drm-intel-fixes"
LOGIN_TIMEOUT = 3.0  # the worker port's deadline in this master (30 s in a real one)
WORKER_CAP = 6  # its per-address cap here

# the guard of this master with a short login deadline and a small worker cap, as a test needs them
OVERRIDE = f"""
from buildbot_kernel.master.listeners import LISTENER_GUARD_SERVICE, ListenerGuard
BuildmasterConfig["services"] = [s for s in BuildmasterConfig["services"] if s.name != LISTENER_GUARD_SERVICE]
BuildmasterConfig["services"].append(ListenerGuard(login_timeout={LOGIN_TIMEOUT}, worker_per_address={WORKER_CAP}))
"""


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    base = tmp_path_factory.mktemp("listeners")
    repo = FixtureRepo(base, (BRANCH,))
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    m = Master(base, settings_text(str(repo.bare), (BRANCH,), ports))
    with open(m.dir / "master.cfg", "a") as f:
        f.write(OVERRIDE)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, soft), hard))  # as most systems start a process
    try:
        m.start(ports["web"])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    m.ports = ports
    m.base = base
    try:
        yield m
    finally:
        m.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def closed(s: socket.socket) -> bytes | None:
    """What the peer sent before it closed ``s``, or None while it is open."""
    s.setblocking(False)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return got or b"<closed>"
            got += chunk
    except BlockingIOError:
        return None
    except OSError:
        return got or b"<reset>"


def response(s: socket.socket) -> bytes:
    s.settimeout(30)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_a_large_body_is_refused_before_it_is_read(master):
    """The hole: an anonymous 200 MiB POST to /api/v2/forceschedulers/x was read and JSON-parsed before
    any authz (410 MB resident).  Now 413 as soon as the headers say how much."""
    s = connect(master.web_port)
    s.sendall(b"POST /api/v2/forceschedulers/x HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % (200 * 1024 * 1024))
    head = response(s)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    s.close()
    # and without a Content-Length: cut as soon as the chunks pass the limit
    s = connect(master.web_port)
    s.sendall(b"POST /api/v2/forceschedulers/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"[" * 64 * 1024)
    try:
        for _ in range(WEB_MAX_BODY // (64 * 1024) + 2):
            s.sendall(chunk)
    except OSError:
        pass  # cut while sending
    assert response(s).startswith(b"HTTP/1.1 413")
    s.close()
    assert master.get("builders")["builders"]


def test_slow_requests_are_cut_and_floods_refused(master):
    """The hole: ~1,000 connections each sending a byte every 25 s (Twisted's idle timeout restarts on
    every byte) held the master's descriptors.  Now a whole request within the deadline, and at most
    WEB_PER_ADDRESS connections from one address: the next gets 503 at once."""
    trickling = connect(master.web_port)
    trickling.sendall(b"GET /api/v2/builders HTTP/1.1\r\nHost: localhost\r\n")
    flood = [connect(master.web_port) for _ in range(WEB_PER_ADDRESS - 1)]
    extra = connect(master.web_port)
    assert response(extra).startswith(b"HTTP/1.1 503"), "one connection over the cap is answered 503"
    extra.close()

    def trickle():
        try:
            trickling.sendall(b"X")  # a byte does not extend the deadline
        except OSError:
            return True
        return closed(trickling)
    got = wait_for(trickle, HEAD_TIMEOUT + 10, "the slow request to be cut off", interval=1.0)
    assert got is True or got.startswith(b"HTTP/1.1 408"), got
    wait_for(lambda: all(closed(s) for s in flood), HEAD_TIMEOUT + 10, "the idle connections to be closed")
    for s in flood + [trickling]:
        s.close()
    wait_for(lambda: master.get("builders"), 30, "the web UI to answer again")


def ws_open(port: int) -> socket.socket:
    """A websocket to /ws as a browser opens it."""
    s = connect(port)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Origin: http://localhost:%d\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
              b"User-Agent: Mozilla/5.0\r\n\r\n" % (port, port, key))
    head = response(s)
    assert head.startswith(b"HTTP/1.1 101"), head[:300]
    return s


def ws_alive(s: socket.socket) -> bool:
    """A ping is answered with a pong."""
    s.sendall(b"\x89\x80" + os.urandom(4))
    s.settimeout(30)
    return s.recv(2) == b"\x8a\x00"


def test_websockets_stay_open_and_are_released(master):
    """A websocket outlives its request deadline, and a closed one no longer counts: more than
    WEB_PER_ADDRESS of them over time, never refused."""
    held = [ws_open(master.web_port) for _ in range(WEB_PER_ADDRESS // 2)]
    started = time.monotonic()
    wait_for(lambda: time.monotonic() - started > HEAD_TIMEOUT + 2, HEAD_TIMEOUT + 10, "the request deadline to pass")
    assert all(ws_alive(s) for s in held), "no websocket is cut by the request deadline"
    for s in held:
        s.close()
    for _ in range(3):  # 3 x WEB_PER_ADDRESS - 1 in all
        batch = []
        for _ in range(WEB_PER_ADDRESS - 1):
            batch.append(wait_for(lambda: _try_ws(master.web_port), 15, "a websocket to be accepted"))
        for s in batch:
            s.close()


def _try_ws(port: int):
    """A websocket, or None while the closed ones of the last batch are still counted (the master hears of
    their end a moment after the client closed them)."""
    try:
        return ws_open(port)
    except AssertionError:
        return None


def test_silent_worker_port_connections_are_closed_and_capped(master):
    """The hole: 1,010 connections to the worker port that never sent a byte stayed open for ever.  Now
    each has LOGIN_TIMEOUT seconds to log in, and WORKER_CAP per address are let in at once."""
    silent = [connect(master.ports["worker"]) for _ in range(WORKER_CAP)]
    extra = connect(master.ports["worker"])
    assert wait_for(lambda: closed(extra), 10, "one connection over the cap to be closed at once")
    extra.close()
    wait_for(lambda: all(closed(s) for s in silent), LOGIN_TIMEOUT + 10, "the silent connections to be closed")
    for s in silent:
        s.close()


def test_a_logged_in_worker_stays_past_the_deadline(master):
    """The deadline is for logging in: a worker that did stays connected, however quiet."""
    worker = Worker(master.base, "w1", "pw", master.ports["worker"])
    worker.start()
    try:
        def connected():
            return any(w.get("connected_to") for w in master.get("workers")["workers"] if w["name"] == "w1")
        wait_for(connected, 60, "the worker to connect")
        since = time.monotonic()
        wait_for(lambda: time.monotonic() - since > LOGIN_TIMEOUT * 3, LOGIN_TIMEOUT * 3 + 10,
                 "three login deadlines to pass")
        assert connected(), "the logged-in worker was cut off"
    finally:
        worker.stop()


def test_the_master_runs_with_room_above_its_listeners_caps(master):
    """Started with the usual soft limit (1024), the master would run out of descriptors with its
    listeners' caps (896 connections) and its builds together: it raises the soft limit (within the hard)."""
    pid = (master.dir / "twistd.pid").read_text().strip()
    with open(f"/proc/{pid}/limits") as f:
        line = next(x for x in f if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert int(soft) == min(int(hard), ROOM * WANTED), line
