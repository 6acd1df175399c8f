"""Settings -> the farm's objects: one Registry, the ``/machines`` Resource, one driver per machine.

The Buildbot glue and the stand-alone ``buildbot-kernel farm`` command both build the farm here, so a
``[[machine]]`` table means the same thing in both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from twisted.internet import defer, threads
from twisted.python import log

from buildbot_kernel import machinetypes
from buildbot_kernel.digest import sha256_file
from buildbot_kernel.farm import keys as keys_mod
from buildbot_kernel.farm.driver import MachineDriver
from buildbot_kernel.farm.http import MachinesResource
from buildbot_kernel.farm.instructions import BootFile
from buildbot_kernel.farm.qemu import QemuMachine
from buildbot_kernel.farm.registry import Registry, write_state
from buildbot_kernel.farm.stage1 import stage1_artifacts
from buildbot_kernel.settings import Machine, Settings, resolve, tree_root


class OffReactorWriter:
    """The registry's state file written in a thread, in order, coalesced: a report arriving while the
    previous write is still on its way only replaces the text that will be written next.  Keeps the
    fsync of every report off the reactor thread (the web UI and the other machines wait on it)."""

    def __init__(self):
        self._pending: tuple[str, str] | None = None
        self._busy = False
        self._idle: list[defer.Deferred] = []

    def flush(self) -> defer.Deferred:
        """Fires once the last state given is on disk (the master waits for it when stopping)."""
        if not self._busy:
            return defer.succeed(None)
        d = defer.Deferred()
        self._idle.append(d)
        return d

    def __call__(self, path: str, text: str) -> None:
        self._pending = (path, text)
        if not self._busy:
            self._next()

    def _next(self, _=None):
        if self._pending is None:
            self._busy = False
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)
            return None
        (path, text), self._pending = self._pending, None
        self._busy = True
        d = threads.deferToThread(write_state, path, text)
        d.addErrback(lambda f: log.err(f, f"farm: cannot write the machine state file {path}"))
        d.addBoth(self._next)
        return None


@dataclass
class Farm:
    registry: Registry
    resource: MachinesResource
    drivers: dict[str, MachineDriver] = field(default_factory=dict)

    @property
    def vms(self) -> dict[str, QemuMachine]:
        """The QEMU machines' VMs, by machine name."""
        return {n: d.power.vm for n, d in self.drivers.items() if isinstance(getattr(d.power, "vm", None),
                                                                             QemuMachine)}

    def driver(self, name: str) -> MachineDriver:
        try:
            return self.drivers[name]
        except KeyError:
            raise KeyError(f"no [[machine]] named {name!r} (configured: {sorted(self.drivers)})") from None

    def release_build(self, buildid: int) -> list[defer.Deferred]:
        """The Buildbot build ``buildid`` ended: every machine it held goes back to its default."""
        return [self.drivers[n].release(only_build=buildid) for n in self.registry.owned_by_build(buildid)]

    def stop(self) -> None:
        """Power off what the farm started (the QEMU machines; a lab machine stays as it is)."""
        for d in self.drivers.values():
            if hasattr(d.power, "stop"):
                d.power.stop()


def machine_type(machine: Machine) -> machinetypes.MachineType:
    return machinetypes.get(machine.type)


def machine_server_url(machine: Machine, base_url: str, image_port: int) -> str:
    """The server as the machine reaches it: the setting, else the images' base URL, except that a machine
    whose type has a guest address (a QEMU guest reaches the host's loopback as 10.0.2.2) uses that."""
    if machine.server_url:
        return machine.server_url.rstrip("/")
    guest = machine_type(machine).guest_address
    if guest:
        port = urlsplit(base_url).port or image_port or 80
        return f"http://{guest}:{port}"
    return base_url.rstrip("/")


def machine_key(settings: Settings, machine: Machine, workdir: str | os.PathLike) -> str:
    """The machine's key: its ``key_file``, else (types with ``generated_key``, e.g. qemu) one generated
    under ``workdir/keys``."""
    if machine.key_file:
        return keys_mod.read_key(resolve(settings, machine.key_file))
    if machine_type(machine).generated_key:
        return keys_mod.generated_key(Path(workdir) / "keys", machine.name)
    raise keys_mod.KeyFileError(f"[[machine]] {machine.name!r}: key_file is missing; "
                                f"{keys_mod.how_to_make('keys/' + keys_mod.key_file_name(machine.name))}")


def make_farm(settings: Settings, state_path: str | os.PathLike, workdir: str | os.PathLike,
              base_url: str | None = None, writer=write_state, locks: dict | None = None) -> Farm:
    """Build the farm; ``workdir`` holds QEMU consoles and monitors, ``state_path`` the registry JSON,
    ``writer`` writes it (the master passes an :class:`OffReactorWriter`), ``locks`` maps machine name ->
    the DeferredLock its steps take (the master's farm service keeps one dict across reconfigurations).

    A qemu machine without ``stage1_kernel``/``stage1_initrd`` gets Debian's kernel and our ramfs,
    fetched and built once into the user's cache (:func:`buildbot_kernel.farm.stage1.stage1_artifacts`).
    """
    base_url = (base_url or settings.images.base_url).rstrip("/")
    image_port = settings.server.image_port
    locks = {} if locks is None else locks
    machines = settings.machines
    machine_keys = {m.name: machine_key(settings, m, workdir) for m in machines}
    shared = keys_mod.shared_keys(machine_keys)  # again here: checkconfig cannot see the generated keys
    if shared:
        raise keys_mod.KeyFileError(f"[[machine]] {shared[0][1]!r}: {keys_mod.shared_key_problem(*shared[0])}")
    registry = Registry([m.name for m in machines], state_path, keys=machine_keys, writer=writer)
    poll, initrds = {}, {}
    index_path = str(tree_root(settings) / "index.json")
    farm = Farm(registry, MachinesResource(registry, poll, initrds))
    for m in machines:
        name = m.name
        mtype = machine_type(m)
        poll[name] = m.poll
        server_url = machine_server_url(m, base_url, image_port)
        kernel = str(resolve(settings, m.stage1_kernel)) if m.stage1_kernel else ""
        stage1_initrd = str(resolve(settings, m.stage1_initrd)) if m.stage1_initrd else ""
        if mtype.builtin_stage1 and not (kernel and stage1_initrd):
            s1 = stage1_artifacts()
            kernel, stage1_initrd = kernel or s1.kernel, stage1_initrd or s1.ramfs
        local_os = str(resolve(settings, m.initrd)) if m.initrd else (
            stage1_initrd if mtype.builtin_stage1 else "")
        initrd = None
        if local_os:
            initrds[name] = local_os
            initrd = BootFile(f"{server_url}/machines/{name}/initrd", sha256_file(local_os))
        setup = machinetypes.PowerSetup(
            machine=m, key=registry.keys[name], server_url=server_url, workdir=Path(workdir),
            stage1_kernel=kernel, stage1_initrd=stage1_initrd,
            disk=str(resolve(settings, m.disk)) if m.disk else "",
            on_accel=lambda accel, name=name: _accel_chosen(registry, name, accel))
        power = mtype.module().make_power(setup)
        farm.drivers[name] = MachineDriver(m, registry, power, server_url, public_base=base_url,
                                           initrd=initrd, index_path=index_path,
                                           lock=locks.setdefault(name, defer.DeferredLock()))
    return farm


def _accel_chosen(registry: Registry, name: str, accel: str) -> None:
    """The master log says it, the registry (and so the dashboard's machines table) keeps it.  Called in
    the thread that started the VM; the registry is the reactor's."""
    from twisted.internet import reactor
    from twisted.python import threadable

    log.msg(f"farm: machine {name}: QEMU accelerator {accel}")
    if threadable.isInIOThread():
        registry.note_accel(name, accel)
    else:
        reactor.callFromThread(registry.note_accel, name, accel)
