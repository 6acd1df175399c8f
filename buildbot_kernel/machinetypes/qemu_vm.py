"""Power of a ``qemu`` machine: the VM itself (:class:`buildbot_kernel.farm.qemu.QemuMachine`)."""

from __future__ import annotations

from twisted.internet import threads

from buildbot_kernel.farm.qemu import QemuMachine


class OffReactorPower:
    """A QEMU machine's power calls in a thread: the first start may probe KVM with a boot of up to
    8 s and a reset talks to the QEMU monitor, neither of which may stall the master's reactor (the web
    UI, the workers and the other machines' reports all wait on it)."""

    def __init__(self, vm: QemuMachine):
        self.vm = vm

    def soft_reboot(self):
        return threads.deferToThread(self.vm.soft_reboot)

    def power_cycle(self):
        return threads.deferToThread(self.vm.power_cycle)

    def lost_power(self) -> str | None:
        """Why the VM is off though nobody switched it off (its QEMU process died), else None: the driver
        asks every second, so a killed VM is an infrastructure failure at once, not a hang."""
        return self.vm.lost_power()

    def stop(self) -> None:
        """Power the VM off when the farm stops (a lab machine stays as it is)."""
        self.vm.stop()


def make_power(setup) -> OffReactorPower:
    m = setup.machine
    vm = QemuMachine(m.name, setup.stage1_kernel, setup.stage1_initrd, setup.server_url, setup.workdir / "qemu",
                     memory=m.memory, accel=m.accel, nic=m.nic, disk=setup.disk, key=setup.key,
                     on_accel=setup.on_accel)
    return OffReactorPower(vm)
