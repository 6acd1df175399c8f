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

from buildbot_kernel.digest import sha256_file
from buildbot_kernel.farm import keys as keys_mod
from buildbot_kernel.farm.driver import MachineDriver, ShellPower
from buildbot_kernel.farm.http import MachinesResource
from buildbot_kernel.farm.instructions import BootFile
from buildbot_kernel.farm.qemu import GUEST_HOST_ADDR, QemuMachine
from buildbot_kernel.farm.registry import Registry, write_state
from buildbot_kernel.farm.stage1 import stage1_artifacts
from buildbot_kernel.settings import Settings, resolve


class OffReactorPower:
    """A QEMU machine's power calls in a thread: the first start may probe KVM with a boot of up to
    15 s and a reset talks to the QEMU monitor, neither of which may stall the master's reactor (the web
    UI, the workers and the other machines' reports all wait on it)."""

    def __init__(self, vm: QemuMachine):
        self.vm = vm

    def soft_reboot(self):
        return threads.deferToThread(self.vm.soft_reboot)

    def power_cycle(self):
        return threads.deferToThread(self.vm.power_cycle)


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
    vms: dict[str, QemuMachine] = field(default_factory=dict)

    def driver(self, name: str) -> MachineDriver:
        try:
            return self.drivers[name]
        except KeyError:
            raise KeyError(f"no [[machine]] named {name!r} (configured: {sorted(self.drivers)})") from None

    def stop(self) -> None:
        """Power off the QEMU machines (a lab machine stays as it is)."""
        for vm in self.vms.values():
            vm.stop()


def machine_server_url(machine: dict, base_url: str, image_port: int) -> str:
    """The server as the machine reaches it: the setting, else the images' base URL, except that a QEMU
    guest reaches the host's loopback through 10.0.2.2."""
    if machine.get("server_url"):
        return machine["server_url"].rstrip("/")
    if machine.get("type") == "qemu":
        port = urlsplit(base_url).port or image_port or 80
        return f"http://{GUEST_HOST_ADDR}:{port}"
    return base_url.rstrip("/")


def machine_key(settings: Settings, machine: dict, workdir: str | os.PathLike) -> str:
    """The machine's key: its ``key_file``, else (qemu machines) one generated under ``workdir/keys``."""
    if machine.get("key_file"):
        return keys_mod.read_key(resolve(settings, machine["key_file"]))
    if machine.get("type") == "qemu":
        return keys_mod.generated_key(Path(workdir) / "keys", machine["name"])
    raise keys_mod.KeyFileError(f"[[machine]] {machine['name']!r}: key_file is missing; "
                                f"{keys_mod.how_to_make('keys/' + keys_mod.key_file_name(machine['name']))}")


def make_farm(settings: Settings, state_path: str | os.PathLike, workdir: str | os.PathLike,
              base_url: str | None = None, writer=write_state) -> Farm:
    """Build the farm; ``workdir`` holds QEMU consoles and monitors, ``state_path`` the registry JSON,
    ``writer`` writes it (the master passes an :class:`OffReactorWriter`).

    A qemu machine without ``stage1_kernel``/``stage1_initrd`` gets Debian's kernel and our ramfs,
    fetched and built once into the user's cache (:func:`buildbot_kernel.farm.stage1.stage1_artifacts`).
    """
    base_url = (base_url or settings.images["base_url"]).rstrip("/")
    image_port = settings.server["image_port"]
    machines = settings.machines
    registry = Registry([m["name"] for m in machines], state_path,
                        keys={m["name"]: machine_key(settings, m, workdir) for m in machines}, writer=writer)
    poll, initrds = {}, {}
    farm = Farm(registry, MachinesResource(registry, poll, initrds))
    for m in machines:
        name = m["name"]
        poll[name] = m["poll"]
        server_url = machine_server_url(m, base_url, image_port)
        kernel = str(resolve(settings, m["stage1_kernel"])) if m["stage1_kernel"] else ""
        stage1_initrd = str(resolve(settings, m["stage1_initrd"])) if m["stage1_initrd"] else ""
        if m["type"] == "qemu" and not (kernel and stage1_initrd):
            s1 = stage1_artifacts()
            kernel, stage1_initrd = kernel or s1.kernel, stage1_initrd or s1.ramfs
        local_os = str(resolve(settings, m["initrd"])) if m["initrd"] else (
            stage1_initrd if m["type"] == "qemu" else "")
        initrd = None
        if local_os:
            initrds[name] = local_os
            initrd = BootFile(f"{server_url}/machines/{name}/initrd", sha256_file(local_os))
        if m["type"] == "qemu":
            disk = str(resolve(settings, m["disk"])) if m["disk"] else ""
            power = QemuMachine(name, kernel, stage1_initrd, server_url, Path(workdir) / "qemu",
                                memory=m["memory"], accel=m["accel"], nic=m["nic"], disk=disk,
                                key=registry.keys[name])
            farm.vms[name] = power
            power = OffReactorPower(power)
        else:
            power = ShellPower(m["soft_reboot"], m["power_cycle"])
        farm.drivers[name] = MachineDriver(m, registry, power, server_url, public_base=base_url,
                                           initrd=initrd)
    return farm
