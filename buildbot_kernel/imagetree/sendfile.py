"""File downloads sent with ``sendfile(2)`` from one sender thread, not through the master's reactor.

The embedded image server lives in the master process: its reactor also answers the web UI and the
workers.  Sending a file through the reactor costs a read and a write of every byte in Python, a reactor
turn per chunk, and the GIL meanwhile, and under a few hundred concurrent downloads the web UI's REST
answers queue behind those turns (README, "Under load").  Here the reactor only parses the request and
checks the path; the response head and the file are then written by one thread with ``sendfile(2)``
(the kernel copies the file to the socket; Python does one call per few MiB) over a ``selectors`` loop
of all downloads in progress, and the reactor hears back once, when a download ended.

The thread owns a duplicate of the socket's descriptor for the length of the body only, and only when
Twisted has nothing buffered for that socket (the request is then the only writer); otherwise the
server falls back to its in-reactor producer.  A client that takes nothing for ``stall_timeout``
seconds is cut off, as before.  The thread ends itself when it has had nothing to send for a while.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

SEND_MAX = 8 << 20  # bytes per sendfile(2) call: few calls per file, and fair between clients
IDLE_EXIT = 10.0  # seconds without a download before the thread ends (started again on demand)


@dataclass(eq=False)
class Job:
    """One body to send: ``head`` then ``length`` bytes of ``file_fd`` from ``offset``.  ``done`` is
    called in the sender thread with None (all sent), ``"stalled"``, ``"cancelled"`` or an OSError."""

    sock: socket.socket
    head: bytes
    file_fd: int
    offset: int
    length: int
    stall_timeout: float | None
    done: object
    progress: float = field(default_factory=time.monotonic)
    cancelled: bool = False


class Sender:
    """The sender thread of one site; :meth:`submit` from the reactor thread, ``done`` callbacks run in
    the sender thread (callers hop back with ``reactor.callFromThread``)."""

    def __init__(self, idle_exit: float = IDLE_EXIT, say=None):
        self.idle_exit = idle_exit
        self._say = say  # told once, when the first download is handed over
        self._lock = threading.Lock()
        self._new: list[Job] = []
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def submit(self, fileno: int, head: bytes, file_fd: int, offset: int, length: int,
               stall_timeout: float | None, done) -> Job:
        """Send ``head`` and the file range on the socket ``fileno`` (duplicated: the caller's descriptor
        stays its own)."""
        sock = socket.socket(fileno=os.dup(fileno))
        sock.setblocking(False)
        job = Job(sock, head, file_fd, offset, length, stall_timeout, done)
        with self._lock:
            self._new.append(job)
            if self._thread is None:
                if self._say is not None:
                    self._say("sending file downloads with sendfile(2) from a thread of their own")
                    self._say = None
                self._thread = threading.Thread(target=self._run, name="image-sendfile", daemon=True)
                self._thread.start()
        self._wake()
        return job

    def cancel(self, job: Job) -> None:
        """Stop sending ``job`` (its connection is gone); its ``done`` is called with "cancelled"."""
        job.cancelled = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:  # the pipe is full: the thread has wake-ups waiting already
            pass

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        jobs: set[Job] = set()
        idle_since = time.monotonic()
        try:
            while True:
                with self._lock:
                    new, self._new = self._new, []
                    if not new and not jobs and time.monotonic() - idle_since > self.idle_exit:
                        self._thread = None
                        return
                for job in new:
                    jobs.add(job)
                    sel.register(job.sock, selectors.EVENT_WRITE, job)
                for key, _ in sel.select(timeout=1.0 if jobs else self.idle_exit):
                    if key.data is None:
                        self._drain_wake()
                    elif key.data in jobs:
                        self._step(sel, jobs, key.data)
                now = time.monotonic()
                for job in list(jobs):
                    if job.cancelled:
                        self._end(sel, jobs, job, "cancelled")
                    elif job.stall_timeout and now - job.progress > job.stall_timeout:
                        self._end(sel, jobs, job, "stalled")
                if jobs or new:
                    idle_since = now
        except Exception as e:  # a bug here must not leave downloads hanging: end every one, then say it
            with self._lock:
                new, self._new = self._new, []
                self._thread = None
            for job in [*jobs, *new]:
                job.sock.close()
                job.done(e)
            raise
        finally:
            sel.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _step(self, sel, jobs: set[Job], job: Job) -> None:
        """Send what the socket takes now, without blocking."""
        try:
            while job.head:
                n = job.sock.send(job.head)
                job.head = job.head[n:]
                job.progress = time.monotonic()
            while job.length:
                n = os.sendfile(job.sock.fileno(), job.file_fd, job.offset, min(job.length, SEND_MAX))
                if n == 0:  # the file shrank under us: end what we can, as the reactor path does
                    break
                job.offset += n
                job.length -= n
                job.progress = time.monotonic()
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return
            self._end(sel, jobs, job, e)
            return
        self._end(sel, jobs, job, None)

    def _end(self, sel, jobs: set[Job], job: Job, outcome) -> None:
        jobs.discard(job)
        sel.unregister(job.sock)
        job.sock.close()  # before the reactor hears: its own descriptor is then the socket's last
        job.done(outcome)
