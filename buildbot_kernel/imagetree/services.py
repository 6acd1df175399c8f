"""Buildbot services of the image tree, for ``c['services']`` in master.cfg.

``ImageTreeService`` (name ``image-tree``) owns the tree: index regeneration at start, the watchdog
observer, retention, and ``publish()`` for the build pipeline's master-side step.
``ImageServerService`` (name ``image-server``) is the embedded HTTP server; other parts mount their
resources through ``children`` (e.g. ``{"machines": resource}``) or ``service.site.resource.putChild``.
Both run their blocking work in threads so the master's reactor never waits on the disk.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from buildbot.util.service import BuildbotService
from twisted.internet import defer, reactor, threads
from twisted.python import log

from buildbot_kernel.imagetree.index import CACHE
from buildbot_kernel.imagetree.leftovers import clean_at_start
from buildbot_kernel.imagetree.modes import Modes, group_problem
from buildbot_kernel.imagetree.scan import subdirs
from buildbot_kernel.imagetree.server import make_site
from buildbot_kernel.imagetree.tree import ImageTree
from buildbot_kernel.imagetree.watcher import TreeWatcher

CHILD_INDEX_MIN_IMAGES = 1000  # below, building the index here takes a fraction of a second


def large_tree_without_cache(root: str, at_least: int = CHILD_INDEX_MIN_IMAGES) -> bool:
    """No saved index cache and at least ``at_least`` image directories (counting stops there)."""
    if os.path.exists(os.path.join(root, CACHE)):
        return False
    count = 0
    for branch in subdirs(root):
        count += len(subdirs(os.path.join(root, branch)))
        if count >= at_least:
            return True
    return False


def index_in_child(root: str, base_url: str, group: str) -> str:
    """Build a tree's index from nothing (no saved cache) in a child process (``buildbot-kernel index``):
    reading every manifest of 10,000 images is seconds of interpreter work, which in a thread of the
    master would take the interpreter lock from the reactor again and again.  The child saves the
    cache the master then loads.  Returns "" or what went wrong (the caller then builds it itself)."""
    argv = [sys.executable, "-m", "buildbot_kernel.cli", "index", "--root", root, "--base-url", base_url,
            "--group", group]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return "" if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()[-500:]


def settle_long_lived_objects() -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``).

    A full collection walks every tracked object while holding the interpreter lock: with the master's
    own objects and the index of 10,000 images (about 80,000 containers) that took 0.2-1 s on a loaded
    host, each one a stall of the reactor thread (bench/bench_scale.py --only stall).  What exists at
    the master's start (modules, the configuration) lives as long as the process, so it is frozen (without
    a collection first: that would be one more such stall; what little cyclic garbage the start left
    stays, once); the cache load and first regeneration then run with collections off (they would walk
    the growing index again and again) and what they built is frozen too.  Only at the first start: the
    objects made later are collected as usual."""
    gc.freeze()


class ImageTreeService(BuildbotService):
    name = "image-tree"

    def checkConfig(self, root, base_url, keep_per_branch=0, max_bytes=0, debounce=1.0, watch="inotify",
                    group="", **kwargs):
        if watch not in ("inotify", "poll", "off"):
            raise ValueError(f"watch is {watch!r}; expected 'inotify', 'poll' (NFS) or 'off'")
        if group_problem(group):
            raise ValueError(f"group: {group_problem(group)}")
        return super().checkConfig(**kwargs)

    def __init__(self, *args, **kwargs):
        self.tree: ImageTree | None = None
        self.watcher: TreeWatcher | None = None
        self.pin_sources: list = []  # callables returning image names in use (running bisects)
        self._started = False  # the first configuration is the master's start: leftovers are stale then
        super().__init__(*args, **kwargs)

    def pins(self) -> set[str]:
        out: set[str] = set()
        for source in self.pin_sources:
            out |= set(source())
        return out

    @defer.inlineCallbacks
    def reconfigService(self, root, base_url, keep_per_branch=0, max_bytes=0, debounce=1.0,
                        watch="inotify", group="", **kwargs):
        yield self._stop_watcher()
        root = os.path.abspath(root)
        first_start = not self._started
        if first_start and (yield threads.deferToThread(large_tree_without_cache, root)):
            problem = yield threads.deferToThread(index_in_child, root, base_url, group)
            if problem:
                log.msg(f"image tree: building the first index in a child process failed, building it here: "
                        f"{problem}")
        if first_start:  # the index of every image is loaded and built now: see settle_long_lived_objects
            settle_long_lived_objects()
            gc.disable()
        try:
            # every disk step here runs in a thread: the tree's cache load, leftovers, the regeneration
            self.tree = yield threads.deferToThread(
                ImageTree, root, base_url, keep_per_branch=keep_per_branch, max_bytes=max_bytes, pins=self.pins,
                modes=Modes.for_group(group))
            # later reconfigs run beside builds that are staging into .incoming: the trash only
            self._started = True
            for line in (yield threads.deferToThread(clean_at_start, root, first_start)):
                log.msg(f"image tree: {line}")
            yield threads.deferToThread(self.tree.regenerate)
        finally:
            if first_start:
                gc.freeze()
                gc.enable()
        yield threads.deferToThread(self.tree.save_cache)
        if watch != "off":
            watcher = TreeWatcher(root, self.tree.regenerate, debounce=debounce, polling=(watch == "poll"))
            yield threads.deferToThread(watcher.start)  # inotify: one watch per directory, 20,000 here
            self.watcher = watcher
        yield super().reconfigService(**kwargs)

    @property
    def base_url(self) -> str:
        return self.tree.index.base_url if self.tree else ""

    @property
    def modes(self) -> Modes:
        """The permission contract a publish into this tree applies (docs/serving.md)."""
        return self.tree.modes if self.tree else Modes()

    def publish(self, staging_dir, branch: str, name: str) -> defer.Deferred:
        """Deferred firing with the published path (or failing with CorruptImage / ImageExists)."""
        return threads.deferToThread(self.tree.publish, staging_dir, branch, name)

    def published(self, path=None) -> defer.Deferred:
        """The publish step renamed an image into the tree itself: retention, then the index."""
        return threads.deferToThread(self.tree.published, path)

    def regenerate(self) -> defer.Deferred:
        return threads.deferToThread(self.tree.regenerate)

    def _stop_watcher(self):
        watcher, self.watcher = self.watcher, None
        if watcher is None:
            return defer.succeed(None)
        return threads.deferToThread(watcher.stop)

    @defer.inlineCallbacks
    def stopService(self):
        yield self._stop_watcher()
        if self.tree is not None:
            yield threads.deferToThread(self.tree.save_cache)
        yield super().stopService()


class ImageServerService(BuildbotService):
    name = "image-server"

    def checkConfig(self, root, port, interface="127.0.0.1", access_log=None, children=None, **kwargs):
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port is {port!r}; expected a TCP port 1-65535 (0 = any free port, for tests)")
        return super().checkConfig(**kwargs)

    def __init__(self, *args, **kwargs):
        self.site = None
        self.port = None
        self.mounted: dict[bytes, object] = {}  # survives a reconfig that rebuilds the site
        self._listen_args = None
        super().__init__(*args, **kwargs)

    def mount(self, name: str | bytes, res) -> None:
        """Serve ``res`` at ``/<name>/`` (the test-farm driver mounts ``machines``)."""
        key = name.encode() if isinstance(name, str) else name
        self.mounted[key] = res
        if self.site is not None:
            self.site.resource.putChild(key, res)

    @defer.inlineCallbacks
    def reconfigService(self, root, port, interface="127.0.0.1", access_log=None, children=None, **kwargs):
        listen_args = (os.path.abspath(root), port, interface, access_log)
        if listen_args != self._listen_args:
            yield self._stop_listening()
            self.site = make_site(root, access_log=access_log)
            for key, res in self.mounted.items():
                self.site.resource.putChild(key, res)
            self.port = reactor.listenTCP(port, self.site, interface=interface)
            self._listen_args = listen_args
        for child_name, res in (children or {}).items():
            self.mount(child_name, res)
        # siblings that serve something here (the test farm's /machines); Buildbot starts the configured
        # services in no fixed order, so each side mounts when it finds the other ready
        for sibling in list(self.parent or ()):
            for child_name, res in getattr(sibling, "http_mounts", dict)().items():
                self.mount(child_name, res)
        yield super().reconfigService(**kwargs)

    def _stop_listening(self):
        port, self.port = self.port, None
        return defer.succeed(None) if port is None else defer.maybeDeferred(port.stopListening)

    @defer.inlineCallbacks
    def stopService(self):
        yield self._stop_listening()
        self._listen_args = None
        yield super().stopService()


def services_from_settings(settings, images_root: str, children: dict | None = None) -> list:
    """The services for ``c['services']``: the tree always, the embedded server unless
    ``server.image_port`` is 0 (Apache/nginx serves the tree then)."""
    images = settings.images
    out = [ImageTreeService(root=images_root, base_url=images.base_url,
                            keep_per_branch=images.keep_per_branch, max_bytes=images.max_bytes,
                            debounce=images.debounce, watch=images.watch, group=images.group)]
    if settings.server.image_port:
        out.append(ImageServerService(root=images_root, port=settings.server.image_port,
                                      interface=settings.listener("image_bind"), children=children))
    return out
