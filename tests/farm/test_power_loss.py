"""A machine whose power the master can see (a QEMU process) going off in the middle of an attempt: an
infrastructure failure at once, retried, never a verdict.  On the simulated clock of test_driver.py; the
real QEMU machine killed in the middle of a bisect is tests/faults/test_power_loss.py."""

from twisted.internet.task import Clock

from buildbot_kernel.farm.driver import MachineDriver
from buildbot_kernel.farm.registry import Registry
from buildbot_kernel.settings import Machine

from .test_driver import SimMachine, run


class PoweredSim(SimMachine):
    """SimMachine whose ``poweroff`` behaviour starts the test, then loses power (``lost_power``)."""

    off = None

    def _boot(self):
        self.off = None
        if self.script[0] == "poweroff":
            self.script.pop(0)
            self.clock.callLater(10, self._start_and_die)
            return
        super()._boot()

    def _start_and_die(self):
        a = self.registry.boot_request(self.name)
        self.registry.report(self.name, {"result": "kexec", "token": a.token})
        self.registry.report(self.name, {"result": "running", "token": a.token, "uname": a.image})
        self.clock.callLater(3, setattr, self, "off", "its QEMU process killed by signal 9")

    def lost_power(self):
        return self.off


def make(script, retries=1):
    clock = Clock()
    reg = Registry(["vm"], clock=clock.seconds)
    sim = PoweredSim("vm", reg, clock, script)
    cfg = Machine(name="vm", boot_timeout=60, test_timeout=100, retries=retries, poll=2)
    return MachineDriver(cfg, reg, sim, "http://h:1", reactor=clock, clock=clock.seconds), sim, reg, clock


def test_power_lost_mid_test_is_an_infra_failure_retried_then_the_verdict_of_the_retry():
    drv, sim, reg, clock = make(["poweroff", "bad"])
    out = run(drv, clock)
    assert out.verdict == "bad" and sim.actions == ["reboot", "cycle"]
    assert out.attempts[0] == "attempt 1: infra: the machine lost power (running): its QEMU process killed by signal 9"
    assert out.infra_failures == 1 and len(out.attempts) == 2
    assert clock.seconds() < 60  # noticed within seconds, not after the 100 s test timeout
    assert reg.get("vm").infra_failures == 0  # the retry's verdict cleared the streak


def test_power_lost_on_every_attempt_is_never_a_verdict():
    drv, sim, reg, clock = make(["poweroff", "poweroff"])
    out = run(drv, clock)
    assert out.verdict == "skip" and out.machine_broken, out  # two in a row: the machine is set aside
    assert all("lost power (running)" in a for a in out.attempts) and len(out.attempts) == 2
