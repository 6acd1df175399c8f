"""Fault injection tools: kill a master or a worker like a power cut, hold real work at a point the test
chooses, and watch the image tree the whole time.

Holding is never a sleep: a build is held on a named pipe its own Makefile reads (:class:`Hold`), and
the master is held on a read of the image disk through fanotify (:class:`ReadGate`), so the fault lands
exactly where the test says, however loaded the machine is.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import select
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

from integration.harness import BIN, wait_for


# -- killing -------------------------------------------------------------------------------------------
def _pid(directory: Path) -> int:
    return int((Path(directory) / "twistd.pid").read_text().strip())


def _tree(pid: int) -> list[int]:
    """``pid``, every process of its session (a daemonized twistd is a session leader) and every
    descendant (the build commands it runs, whatever session or group they made for themselves)."""
    stats = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:  # after the ")" of the command name: state ppid pgrp session
                stats[int(p.name)] = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    out = {pid} | {p for p, f in stats.items() if int(f[3]) == pid}
    grew = True
    while grew:
        more = {p for p, f in stats.items() if int(f[1]) in out} - out
        out |= more
        grew = bool(more)
    return sorted(out)


def _gone(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] == "Z"  # killed and not reaped yet


def power_cut(directory: Path) -> int:
    """SIGKILL the twistd daemon of ``directory`` (a master or a worker) and every process of its session
    (the build commands it runs), as a crash would; returns once they are all gone."""
    pid = _pid(directory)
    victims = _tree(pid)
    for v in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(v, signal.SIGKILL)
    wait_for(lambda: all(_gone(v) for v in victims), 30, f"the processes of {directory} to die")
    # A dead process's pid file is stale; twistd removes it itself unless the pid still exists, and in a
    # container whose init does not reap, the killed daemon stays a zombie: its pid exists and the next
    # start would refuse ("Another twistd server is running").  A rebooted or reaping host has no zombie.
    (Path(directory) / "twistd.pid").unlink(missing_ok=True)
    return pid


def start_worker(worker, master, timeout: float = 120) -> None:
    """``buildbot-worker start``, then wait until the master lists the worker as connected (the command
    itself gives up watching early on a loaded machine, while the worker goes on connecting)."""
    subprocess.run([str(BIN / "buildbot-worker"), "start", str(worker.dir)], capture_output=True, timeout=120)
    name = worker.dir.name.removeprefix("worker-")
    wait_for(lambda: any(w["name"] == name and w["connected_to"] for w in master.get("workers")["workers"]),
             timeout, f"worker {name} to connect")


# -- holding a build: a named pipe in the build's own Makefile ------------------------------------------
class Hold:
    """A named pipe a build reads (blocking) at a point of its Makefile; every arrival is logged.

    The arrival is logged before the build blocks, so ``wait_reached`` knows the build is there;
    ``release()`` waits for the reader and lets it go on.
    """

    def __init__(self, base: Path, name: str = "hold"):
        self.fifo = base / f"{name}.fifo"
        self.log = base / f"{name}.log"
        os.mkfifo(self.fifo)

    def recipe(self) -> str:
        """Shell lines for a Makefile rule: log the arrival, then wait for the test."""
        return f"\t@echo reached >> {self.log}\n\t@read line < {self.fifo} || true\n"

    def arrivals(self) -> int:
        return len(self.log.read_text().split()) if self.log.exists() else 0

    def wait_reached(self, n: int, timeout: float = 90):
        """Wait for the n-th arrival at the hold point (it then blocks on the pipe until released)."""
        wait_for(lambda: self.arrivals() >= n, timeout, f"the build to reach the hold point ({n})")

    def let_go(self) -> bool:
        """Let a reader blocked on the pipe go on (it reads end of file); False if none is there."""
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no reader
                return False
            raise
        os.close(fd)
        return True

    def release(self, timeout: float = 60):
        """Wait for a reader on the pipe and let it go."""
        wait_for(self.let_go, timeout, "a build blocked on the hold pipe")


def holding_makefile(makefile: str, hold: Hold) -> str:
    """The fixture Makefile with ``hold`` in the vmlinux link rule (the middle of a build: objects
    compiled, image not yet made)."""
    rule = "$(objtree)/vmlinux: $(OBJS)\n"
    assert rule in makefile, "the fixture Makefile has no vmlinux rule"
    return makefile.replace(rule, rule + hold.recipe(), 1)


# -- the image tree, watched the whole time --------------------------------------------------------------
class TreeWatch:
    """Polls the image tree in a thread; records every moment something half-written was listed: an
    image directory without metadata.json, or an index.json entry with no complete directory."""

    def __init__(self, root: Path, interval: float = 0.02):
        self.root = root
        self.interval = interval
        self.problems: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        while not self._stop.is_set():
            self.problems += tree_problems(self.root)
            self.polls += 1
            self._stop.wait(self.interval)


def image_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [i for b in root.iterdir() if b.is_dir() and not b.name.startswith(".")
            for i in b.iterdir() if i.is_dir()]


def tree_problems(root: Path) -> list[str]:
    problems = []
    complete = set()
    for d in image_dirs(root):
        if (d / "metadata.json").is_file():
            complete.add(d.name)
        elif d.exists():  # not removed between the listing and the check
            problems.append(f"{d} listed without metadata.json")
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):  # written atomically; may be absent
        listed = {e["name"] for e in json.loads((root / "index.json").read_text())["images"]}
        problems += [f"index.json lists {n} with no complete image" for n in sorted(listed - complete)
                     if not (_listed_dir(root, n) / "metadata.json").is_file()]
    return problems


def _listed_dir(root: Path, name: str) -> Path:
    return next((d for d in image_dirs(root) if d.name == name), root / "-" / name)


def index_names(root: Path) -> list[str]:
    return sorted(e["name"] for e in json.loads((root / "index.json").read_text())["images"])


# -- a disk of its own ------------------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A real filesystem of ``size`` at ``path`` (needs root and mount rights; the test skips if not)."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {r.stderr.strip()}")
    try:
        yield path
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)  # a process killed a moment ago may still hold a file there


def fill(path: Path) -> Path:
    """Write zeros to ``path`` until the filesystem is full (unbuffered: every byte that fits is on the
    disk); the filler file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"\0" * 4096
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return path


# -- holding the master: fanotify permission events on the image disk -----------------------------------
_FAN_CLASS_CONTENT, _FAN_CLOEXEC, _FAN_ACCESS_PERM = 0x04, 0x01, 0x20000
_FAN_MARK_ADD, _FAN_MARK_MOUNT, _FAN_ALLOW = 0x01, 0x10, 0x01
_AT_FDCWD = -100
_EVENT = struct.Struct("IBBHQii")


class ReadGate:
    """Holds the first read (``read(2)``, not open) of a file on a mount whose path matches, until
    :meth:`release`; every other read goes on at once.  The kernel's fanotify permission events: the
    reader really is blocked inside the read, so a fault injected while :meth:`held` is set lands between
    what came before that read and what comes after it.  Needs CAP_SYS_ADMIN (the test skips if not).
    """

    def __init__(self, mount: Path, match):
        import pytest

        self.match = match
        self.held = threading.Event()
        self.held_path: str | None = None
        self._held_fd: int | None = None
        self._stop = threading.Event()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
        self.fd = libc.fanotify_init(_FAN_CLASS_CONTENT | _FAN_CLOEXEC, os.O_RDONLY | os.O_LARGEFILE)
        if self.fd < 0:
            pytest.skip(f"fanotify is not available here: {os.strerror(ctypes.get_errno())}")
        if libc.fanotify_mark(self.fd, _FAN_MARK_ADD | _FAN_MARK_MOUNT, _FAN_ACCESS_PERM, _AT_FDCWD,
                              os.fsencode(mount)) != 0:
            os.close(self.fd)
            pytest.skip(f"fanotify_mark failed: {os.strerror(ctypes.get_errno())}")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _answer(self, efd: int) -> None:
        with contextlib.suppress(OSError):
            os.write(self.fd, struct.pack("iI", efd, _FAN_ALLOW))
        os.close(efd)

    def _run(self):
        while not self._stop.is_set():
            if not select.select([self.fd], [], [], 0.1)[0]:
                continue
            buf = os.read(self.fd, 4096)
            while len(buf) >= _EVENT.size:
                size, _, _, _, _, efd, pid = _EVENT.unpack_from(buf)
                buf = buf[size:]
                if efd < 0:
                    continue
                path = os.readlink(f"/proc/self/fd/{efd}")
                if self._held_fd is None and not self.held.is_set() and self.match(path, pid):
                    self._held_fd, self.held_path = efd, path
                    self.held.set()
                else:
                    self._answer(efd)

    def release(self):
        if self._held_fd is not None:
            self._answer(self._held_fd)
            self._held_fd = None

    def close(self):
        self.release()
        self._stop.set()
        self._thread.join(5)
        os.close(self.fd)  # the kernel allows whatever was still pending

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
