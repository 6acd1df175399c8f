"""MachineDriver's timing and retry rules, on a simulated clock.

The machine here is a script of what a machine does after power-on (fetch, kexec, report), acting through
the same Registry calls the HTTP resource makes; the real machine path is tests/farm/test_e2e_qemu.py.
"""

import itertools

import pytest
from twisted.internet.task import Clock

from buildbot_kernel.farm.driver import MachineDriver, ShellPower, lock_name
from buildbot_kernel.farm.registry import Registry
from buildbot_kernel.settings import Machine

SHA = "ab" * 32
_names = itertools.count()


def image(name="6.1.0-cand"):
    return {"name": name, "url": "http://h/i/", "files": {"vmlinuz": {"sha256": SHA}}}


class SimMachine:
    """After each power action, boots the next behaviour of ``script``: good | bad | error | hang | dead |
    mismatch | reset | garbage."""

    def __init__(self, name, registry, clock, script):
        self.name, self.registry, self.clock, self.script = name, registry, clock, list(script)
        self.actions = []

    def soft_reboot(self):
        self.actions.append("reboot")
        self._boot()

    def power_cycle(self):
        self.actions.append("cycle")
        self._boot()

    def _boot(self):
        what = self.script.pop(0)
        if what != "dead":
            self.clock.callLater(10, self.stage1, what)

    def stage1(self, what):
        a = self.registry.boot_request(self.name)
        r = self.registry.report
        if what == "garbage":
            r(self.name, {"result": "boot-error", "token": a.token, "error": "kexec-load", "reason": "bad"})
            return
        r(self.name, {"result": "kexec", "token": a.token})
        if what == "hang":
            return
        if what == "reset":
            self.clock.callLater(5, self.registry.boot_request, self.name)
            return
        uname = "old-kernel" if what == "mismatch" else a.image
        r(self.name, {"result": "running", "token": a.token, "uname": uname})
        r(self.name, {"result": what if what in ("bad", "error") else "good", "token": a.token, "uname": uname})
        self.clock.callLater(1, self.registry.boot_request, self.name)  # stage 2 polls


def make(script, clock=None):
    clock = clock or Clock()
    name = f"sim{next(_names)}"
    reg = Registry([name], clock=clock.seconds)
    sim = SimMachine(name, reg, clock, script)
    cfg = Machine(name=name, boot_timeout=60, test_timeout=100, retries=2, poll=2)
    drv = MachineDriver(cfg, reg, sim, "http://h:1", reactor=clock, clock=clock.seconds)
    return drv, sim, reg, clock


def run(drv, clock, entry=None, mode="test", seconds=2000):
    results = []
    drv.run_step(entry or image(), "true", mode).addBoth(results.append)
    for _ in range(seconds):
        if results:
            break
        clock.advance(1)
    assert results, "step did not finish"
    return results[0]


def test_good_step_then_next_step_needs_no_power():
    drv, sim, reg, clock = make(["good"])
    out = run(drv, clock)
    assert out.verdict == "good" and out.uname == "6.1.0-cand" and sim.actions == ["reboot"]
    sim.script.append("unused")
    clock.advance(1)  # the candidate's stage 2 is polling now
    a_done = []
    drv.run_step(image(), "true", "test").addBoth(a_done.append)
    sim.stage1("bad")  # it picks the instructions up by itself
    assert a_done[0].verdict == "bad" and sim.actions == ["reboot"]


def test_a_broken_test_is_no_verdict_and_not_retried():
    """Stage 2's "error" (the test exited above 127, bbk_verdict) is neither a verdict nor a machine fault:
    one attempt, the machine stays in service, and the bisect's tester stops the bisect with it."""
    drv, sim, reg, clock = make(["error"])
    out = run(drv, clock)
    assert out.verdict == "error" and len(out.attempts) == 1 and not out.machine_broken
    assert sim.actions == ["reboot"] and reg.get(drv.name).state == "idle"


def test_polling_machine_that_never_picks_up_gets_rebooted():
    drv, sim, reg, clock = make(["good"])
    reg.boot_request(drv.name)  # seen polling, then it died
    out = run(drv, clock)
    assert out.verdict == "good" and sim.actions == ["reboot"]


@pytest.mark.parametrize("mode, verdict", [("test", "skip"), ("boot", "bad")])
def test_hang_is_power_cycled_and_retried(mode, verdict):
    drv, sim, reg, clock = make(["hang", "hang", "hang"])
    out = run(drv, clock, mode=mode)
    assert out.verdict == verdict and sim.actions == ["reboot", "cycle", "cycle"]
    assert len(out.attempts) == 3 and not out.machine_broken and reg.get(drv.name).state == "idle"


def test_hang_then_good_is_good():
    drv, sim, reg, clock = make(["hang", "good"])
    out = run(drv, clock)
    assert out.verdict == "good" and len(out.attempts) == 2


def test_reset_candidate_is_a_boot_failure():
    drv, sim, reg, clock = make(["reset", "reset", "reset"])
    out = run(drv, clock, mode="boot")
    assert out.verdict == "bad" and "rebooted" in out.reason


def test_dead_machine_is_broken_and_the_next_step_stops_at_once():
    drv, sim, reg, clock = make(["dead", "dead", "dead"])
    out = run(drv, clock, mode="boot")
    assert out.verdict == "skip" and out.machine_broken and out.infra_failures == 3
    assert reg.get(drv.name).state == "broken"
    again = run(drv, clock)
    assert again.machine_broken and again.verdict == "skip" and sim.actions == ["reboot", "cycle", "cycle"]


def test_image_fault_is_not_retried():
    drv, sim, reg, clock = make(["garbage", "good"])
    out = run(drv, clock)
    assert out.verdict == "skip" and "kexec-load" in out.reason and sim.actions == ["reboot"]


def test_uname_mismatch_flags_the_machine():
    drv, sim, reg, clock = make(["mismatch"])
    out = run(drv, clock)
    assert out.verdict == "skip" and "not the image" in reg.get(drv.name).flagged


def test_late_report_after_timeout_is_stale():
    drv, sim, reg, clock = make(["hang", "good"])
    tokens = []
    reg.subscribe(drv.name, lambda ev: tokens.append(ev.token))
    run(drv, clock)
    assert reg.report(drv.name, {"result": "bad", "token": tokens[0]}) == (False, "stale token")


def test_steps_on_one_machine_are_serialised():
    drv, sim, reg, clock = make(["good", "good"])
    done = []
    drv.run_step(image(), "true", "test").addBoth(done.append)
    drv.run_step(image(), "true", "test").addBoth(done.append)
    assert drv.lock.locked and lock_name(drv.name) == f"farm-machine-{drv.name}"
    for _ in range(200):
        clock.advance(1)
    assert [o.verdict for o in done] == ["good", "good"]


def test_shell_power_runs_commands(tmp_path):
    from buildbot_kernel.farm.testing import ReactorThread

    mark = tmp_path / "cycled"
    p = ShellPower("", f"touch {mark}")
    ReactorThread.call(p.power_cycle)
    assert mark.exists()
    with pytest.raises(Exception, match="exited 3"):
        ReactorThread.call(ShellPower("exit 3", "").soft_reboot)
