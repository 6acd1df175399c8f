"""The sendfile thread on its own, over real socket pairs: whole bodies, many at once, a reader that
stalls, a connection that goes away."""

from __future__ import annotations

import os
import queue
import socket
import threading

import pytest

from buildbot_kernel.imagetree.sendfile import Sender


@pytest.fixture
def payload(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "vmlinuz"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield data, fd
    os.close(fd)


def drain(sock: socket.socket, out: list):
    got = b""
    while chunk := sock.recv(1 << 16):
        got += chunk
    out.append(got)


def test_many_bodies_at_once_arrive_whole(payload):
    data, fd = payload
    sender, outcomes, readers, results = Sender(), queue.Queue(), [], []
    pairs = [socket.socketpair() for _ in range(20)]
    for i, (ours, theirs) in enumerate(pairs):
        sender.submit(ours.fileno(), b"HEAD %d\r\n" % i, fd, i, len(data) - i, 30, outcomes.put)
        ours.close()  # the thread holds its own duplicate; the peer sees EOF once it closed that
        t = threading.Thread(target=drain, args=(theirs, results))
        t.start()
        readers.append(t)
    assert [outcomes.get(timeout=60) for _ in pairs] == [None] * len(pairs)
    for t in readers:
        t.join(30)
    assert sorted(results) == sorted(b"HEAD %d\r\n" % i + data[i:] for i in range(20))


def test_a_reader_that_takes_nothing_is_stalled_out(payload):
    data, fd = payload
    sender, outcomes = Sender(), queue.Queue()
    ours, theirs = socket.socketpair()
    sender.submit(ours.fileno(), b"", fd, 0, len(data), 0.5, outcomes.put)
    assert outcomes.get(timeout=30) == "stalled"
    theirs.close()
    ours.close()


def test_a_peer_that_goes_away_ends_the_job_with_its_error(payload):
    data, fd = payload
    sender, outcomes = Sender(), queue.Queue()
    ours, theirs = socket.socketpair()
    theirs.close()
    sender.submit(ours.fileno(), b"", fd, 0, len(data), 30, outcomes.put)
    outcome = outcomes.get(timeout=30)
    assert isinstance(outcome, OSError), outcome
    ours.close()


def test_cancel_ends_a_job_at_once(payload):
    data, fd = payload
    sender, outcomes = Sender(), queue.Queue()
    ours, theirs = socket.socketpair()
    job = sender.submit(ours.fileno(), b"", fd, 0, len(data), 30, outcomes.put)
    sender.cancel(job)
    assert outcomes.get(timeout=30) in ("cancelled", None)
    theirs.close()
    ours.close()


def test_the_thread_ends_when_idle_and_comes_back(payload):
    data, fd = payload
    sender, outcomes = Sender(idle_exit=0.2), queue.Queue()
    for _ in range(2):
        ours, theirs = socket.socketpair()
        sender.submit(ours.fileno(), b"x", fd, 0, 10, 30, outcomes.put)
        ours.close()
        assert outcomes.get(timeout=30) is None
        assert theirs.recv(100) == b"x" + data[:10]
        theirs.close()
        thread = sender._thread
        if thread is not None:
            thread.join(10)
        assert sender._thread is None
