"""Settings -> the farm's objects: one Registry, the ``/machines`` Resource, one driver per machine.

The Buildbot glue and the stand-alone ``buildbot-kernel farm`` command both build the farm here, so a
``[[machine]]`` table means the same thing in both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from twisted.internet import threads

from buildbot_kernel.farm.driver import MachineDriver, ShellPower
from buildbot_kernel.farm.http import MachinesResource
from buildbot_kernel.farm.instructions import BootFile
from buildbot_kernel.farm.qemu import GUEST_HOST_ADDR, QemuMachine
from buildbot_kernel.farm.registry import Registry
from buildbot_kernel.farm.stage1 import sha256_file, stage1_artifacts
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


def make_farm(settings: Settings, state_path: str | os.PathLike, workdir: str | os.PathLike,
              base_url: str | None = None) -> Farm:
    """Build the farm; ``workdir`` holds QEMU consoles and monitors, ``state_path`` the registry JSON.

    A qemu machine without ``stage1_kernel``/``stage1_initrd`` gets Debian's kernel and our ramfs,
    fetched and built once into the repository's ``.cache/farm`` (scripts/fetch-stage1-kernel,
    scripts/build-stage1-ramfs).
    """
    base_url = (base_url or settings.images["base_url"]).rstrip("/")
    image_port = settings.server["image_port"]
    machines = settings.machines
    registry = Registry([m["name"] for m in machines], state_path)
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
                                memory=m["memory"], accel=m["accel"], nic=m["nic"], disk=disk)
            farm.vms[name] = power
            power = OffReactorPower(power)
        else:
            power = ShellPower(m["soft_reboot"], m["power_cycle"])
        farm.drivers[name] = MachineDriver(m, registry, power, server_url, public_base=base_url,
                                           initrd=initrd)
    return farm
