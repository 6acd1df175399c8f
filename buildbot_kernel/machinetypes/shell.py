"""Power through the admin's shell commands (the ``remote`` type)."""

from __future__ import annotations

from buildbot_kernel.farm.driver import ShellPower


def make_power(setup) -> ShellPower:
    return ShellPower(setup.machine.soft_reboot, setup.machine.power_cycle)
