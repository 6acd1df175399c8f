"""The test farm inside the master: registry, ``/machines`` on the image server, a driver per machine.

The bisect builder asks this service (``named_service(master, "farm")``) for a machine's driver; test
machines talk to ``<image server>/machines/<name>/...``.  Building the farm may fetch Debian's stage-1
kernel and build the ramfs the first time, so it runs in a thread and drivers wait for it.
Of several masters sharing ``state_dir``, the farm runs on the one holding ``<state_dir>/farm.lock``
(``owns_farm``); master/farm_route.py sends the builds that drive machines there.
A machine is held in the name of a Buildbot build (a bisect's, an image test's); when that build ends,
whichever way (finished, stopped, cancelled), the service releases the machine to its default kernel, and
after a restart it releases every machine whose build is no longer running.
"""

from __future__ import annotations

import os

from buildbot.util.service import BuildbotService
from twisted.internet import defer, threads
from twisted.python import log

from buildbot_kernel import settings as settings_mod
from buildbot_kernel.buildbot_adapter import named_service, start_queued_builds
from buildbot_kernel.farm.factory import Farm, OffReactorWriter, make_farm
from buildbot_kernel.farm.registry import read_snapshot
from buildbot_kernel.imagetree.httpguard import install_body_limit
from buildbot_kernel.imagetree.treelock import try_hold

FARM_SERVICE = "farm"
IMAGE_SERVER_SERVICE = "image-server"


class FarmService(BuildbotService):
    name = FARM_SERVICE

    def __init__(self, *args, **kwargs):
        self.farm: Farm | None = None
        self.error: Exception | None = None  # why the farm could not be set up
        self._waiters: list[defer.Deferred] = []  # driver() calls made while the farm is being set up
        self._consumer = None  # of the "build finished" messages
        self._owner_fd: int | None = None  # holds <state_dir>/farm.lock: one farm per registry
        # machine name -> the lock its steps take: a step of the farm a reconfig replaced and one of the
        # new farm never drive one machine at once
        self.machine_locks: dict[str, defer.DeferredLock] = {}
        self._state_file = ""  # <state_dir>/farm.json, the registry's state (the farm's master writes it)
        self._machine_names: list[str] = []
        super().__init__(*args, **kwargs)

    @defer.inlineCallbacks
    def reconfigService(self, settings_path, state_dir, master_dir=None, **kwargs):
        yield super().reconfigService(**kwargs)
        old, self.farm, self.error = self.farm, None, None
        if old is not None:
            yield threads.deferToThread(old.stop)
        s = settings_mod.load(settings_path, master_dir=master_dir)  # images.root as the master reads it
        os.makedirs(state_dir, exist_ok=True)
        self._state_file = os.path.join(state_dir, "farm.json")
        self._machine_names = [m.name for m in s.machines]
        if self._owner_fd is None:
            self._owner_fd = yield threads.deferToThread(try_hold, os.path.join(state_dir, "farm.lock"))
            if self._owner_fd is not None:  # machine work left queued for the farm's master: ours now
                start_queued_builds(self.master)  # (master/farm_route.py)
        if self._owner_fd is None:  # masters sharing state_dir: README "Growing past one machine"
            self.error = RuntimeError(f"the test farm of {state_dir} runs on another master (the one holding "
                                      f"{os.path.join(state_dir, 'farm.lock')}); machine work is left to it")
            log.msg(f"test farm not started: {self.error}")
            self._wake()
            return
        try:
            self.farm = yield threads.deferToThread(make_farm, s, self._state_file,
                                                    os.path.join(state_dir, "farm"), writer=OffReactorWriter(),
                                                    locks=self.machine_locks)
        except Exception as e:  # a broken stage-1 setup must not stop the master; bisects say why
            log.err(e, "test farm could not be set up")
            self.error = e
            self._wake()
            return
        server = named_service(self.master, IMAGE_SERVER_SERVICE)
        if server is not None:  # else the image server mounts http_mounts() when it starts
            self._limit_bodies(server)
            server.mount("machines", self.farm.resource)
        self._wake()
        if self._consumer is None:
            self._consumer = yield self.master.mq.startConsuming(self._build_finished, ("builds", None, "finished"))
        # not waited for: a default kernel given by URL may take a while to fetch, and a reconfig must not
        self._release_orphans().addErrback(log.err, "farm: releasing machines of builds that are gone")

    @property
    def owns_farm(self) -> bool:
        """This master holds ``<state_dir>/farm.lock``: the farm runs here (or is being set up here)."""
        return self._owner_fd is not None

    def _build_finished(self, key, msg) -> None:
        if self.farm is not None:
            for d in self.farm.release_build(msg.get("buildid") or 0):
                d.addErrback(log.err, f"farm: releasing the machines of build {msg.get('buildid')}")

    @defer.inlineCallbacks
    def _release_orphans(self):
        """Machines held by a build that is no longer running (the master stopped during it)."""
        farm = self.farm
        for name, st in list(farm.registry.machines.items()):
            if not st.owner:
                continue
            build = (yield self.master.data.get(("builds", st.owner_build))) if st.owner_build else None
            if build is None or build.get("complete"):
                farm.drivers[name].release(only_build=st.owner_build).addErrback(
                    log.err, f"farm: releasing {name}")

    def _limit_bodies(self, server) -> None:
        """Reports larger than the farm's limit are refused before their body is read (farm/http.py)."""
        if getattr(server, "site", None) is not None:
            install_body_limit(server.site)

    def http_mounts(self) -> dict:
        """What the image server serves for the farm, once the farm is ready (it calls this after making
        its site, which is when the site's requests get the body limit)."""
        if self.farm is None:
            return {}
        self._limit_bodies(named_service(self.master, IMAGE_SERVER_SERVICE))
        return {"machines": self.farm.resource}

    def repair(self, machine: str) -> str:
        """An admin says the machine works again (the ``repair-machine`` scheduler); returns what it was."""
        if self.farm is None:
            raise RuntimeError(f"the test farm is not set up: {self.error or 'still starting'}")
        st = self.farm.registry.get(machine)
        before = f"{st.state}" + (f" ({st.broken_reason})" if st.broken_reason else "")
        self.farm.registry.repair(machine)
        return before

    def _wake(self):
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    @defer.inlineCallbacks
    def driver(self, machine: str):
        """The machine's driver, once the farm is ready (raises KeyError naming the configured ones)."""
        if self.farm is None and self.error is None:
            waiter = defer.Deferred()
            self._waiters.append(waiter)
            yield waiter
        if self.farm is None:
            raise RuntimeError(f"the test farm could not be set up: {self.error}")
        return self.farm.driver(machine)

    def snapshot(self) -> defer.Deferred:
        """The machines as the UI shows them. On a master without the farm (another master holds its lock),
        as the farm's master last wrote them to the shared state file, read off the reactor thread: both
        masters serve the UI, and the machines table must not be empty on one of them."""
        if self.farm is not None:
            return defer.succeed(self.farm.registry.snapshot())
        if not self.owns_farm and self._machine_names:
            return threads.deferToThread(read_snapshot, self._machine_names, self._state_file)
        return defer.succeed({"schema": 1, "machines": []})

    @defer.inlineCallbacks
    def stopService(self):
        if self._consumer is not None:
            self._consumer.stopConsuming()
            self._consumer = None
        if self.farm is not None:
            yield threads.deferToThread(self.farm.stop)
            yield self.farm.registry.writer.flush()  # the last report's state reaches the disk
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None
        yield super().stopService()
