"""Watchdog observer: regenerate the index when people add, change or delete images by hand.

Debounced on the trailing edge: every relevant event pushes the regeneration ``debounce`` seconds out,
so copying an image in (dozens of events) or an ``rm -r`` of many images makes one regeneration; a
steady trickle still regenerates every ``max_delay`` seconds.  Events the index machinery causes itself
are not relevant: writes of generated files (``index.*``, ``latest``), hidden names (temp files,
``.incoming``, ``.trash``, ``.state``), file opens and reads (the scan reads manifests, clients download
images: inotify is not even asked for them) and directory
"modified" notices (they do not say which entry changed; the entry's own event does).  So a publish,
which regenerates directly, costs at most one extra regeneration that finds nothing to write.

inotify does not see what other NFS clients write: on a tree shared over NFS where other hosts add
images, use ``polling=True`` (a periodic directory walk).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from buildbot_kernel.imagetree.index import GENERATED_FILES

log = logging.getLogger(__name__)
_IGNORED_TYPES = {"opened", "closed_no_write"}
# asked of inotify itself: not opens and reads, which every image download makes (hundreds a second under
# load, each an event handled in Python, holding the GIL the master's reactor needs), and the index's own
# reads (20,000 manifests at 10,000 images) would overflow its queue, which makes watchdog walk the whole
# tree again
WATCHED_EVENTS = [FileCreatedEvent, DirCreatedEvent, FileMovedEvent, DirMovedEvent, FileDeletedEvent,
                  DirDeletedEvent, FileModifiedEvent, FileClosedEvent]


def relevant_path(root: str, path: str) -> bool:
    rel = os.path.relpath(path, root)
    if rel == "." or rel.startswith(".."):
        return False
    parts = rel.split(os.sep)
    if any(p.startswith(".") for p in parts):
        return False
    # <root>/index.{json,html} and <root>/<branch>/{index.json,index.html,latest} are ours
    return not (len(parts) <= 2 and parts[-1] in GENERATED_FILES)


def relevant(root: str, event: FileSystemEvent) -> bool:
    if event.event_type in _IGNORED_TYPES or isinstance(event, DirModifiedEvent):
        return False
    paths = [event.src_path, getattr(event, "dest_path", "") or ""]
    return any(p and relevant_path(root, os.fsdecode(p)) for p in paths)


def quiet_rewatch_warning() -> None:
    """watchdog (7.x) warns each time a watched directory is renamed inside the tree (every publish moves
    one in from .incoming/); it re-adds the watch correctly, so the warning is only noise in the log.
    Python's warning filters are per process: this one is installed by the watcher that causes the
    warning, when it starts (not on import), and matches only that message raised from watchdog's own
    modules, so no other warning is hidden.  Installing it again replaces it (no duplicates)."""
    warnings.filterwarnings("ignore", message="Callback with id .* already exists", category=RuntimeWarning,
                            module=r"watchdog(\.|$)")


class TreeWatcher(FileSystemEventHandler):
    """Calls ``regenerate()`` (from its own thread) after bursts of relevant changes under ``root``."""

    def __init__(self, root: str | os.PathLike, regenerate: Callable[[], object], debounce: float = 1.0,
                 max_delay: float = 10.0, polling: bool = False, poll_interval: float = 2.0):
        self.root = os.path.realpath(root)
        self.regenerate = regenerate
        self.debounce = debounce
        self.max_delay = max(max_delay, debounce)
        self.observer = PollingObserver(timeout=poll_interval) if polling else Observer()
        self.regenerations = 0  # how many times regenerate() ran (tests and logs)
        self._cond = threading.Condition()
        self._first_event: float | None = None
        self._last_event = 0.0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="imagetree-watcher", daemon=True)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if not relevant(self.root, event):
            return
        with self._cond:
            now = time.monotonic()
            self._last_event = now
            if self._first_event is None:
                self._first_event = now
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._first_event is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                while not self._stopping:
                    now = time.monotonic()
                    due = min(self._last_event + self.debounce, self._first_event + self.max_delay)
                    if now >= due:
                        break
                    self._cond.wait(due - now)
                if self._stopping:
                    return
                self._first_event = None
            try:
                self.regenerate()
                self.regenerations += 1
            except Exception:  # a broken tree must not kill the watcher; the next change retries
                log.exception("index regeneration after a change in %s failed", self.root)

    def start(self) -> None:
        quiet_rewatch_warning()
        os.makedirs(self.root, exist_ok=True)
        self.observer.schedule(self, self.root, recursive=True, event_filter=WATCHED_EVENTS)
        self.observer.start()
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.observer.stop()
        self.observer.join(timeout=10)
        self._thread.join(timeout=10)
