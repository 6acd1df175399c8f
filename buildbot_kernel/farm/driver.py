"""Run one bisect step on one test machine: write its boot instructions, power it, wait for the report.

The glue between the pure parts (instructions, registry, steplogic) and time: Twisted timers for the
boot and test timeouts, Deferreds for the machine's events, power commands run off the reactor thread.
A machine that is already polling (it is sitting in stage 1, or in stage 2 of the previous candidate)
needs no power action at all: it picks the new instructions up and kexecs, which is what makes a bisect
step one kexec boot.  Otherwise the first attempt soft-reboots it and every retry power-cycles it.
When the owner's work ends, :meth:`MachineDriver.release` sends the machine back to its default kernel
(``[[machine]] default_kernel``) or to stage 1 (docs/machine-types.md "When a bisect or test ends").
"""

from __future__ import annotations

import logging
import subprocess
import time

from twisted.internet import defer, task, threads
from twisted.internet.defer import inlineCallbacks

from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.farm import default_kernel, steplogic
from buildbot_kernel.farm.instructions import BootFile, InstructionError, make_assignment
from buildbot_kernel.farm.registry import Event, Registry
from buildbot_kernel.farm.steplogic import AttemptEnd, StepOutcome
from buildbot_kernel.settings import Machine

log = logging.getLogger(__name__)

POWER_COMMAND_TIMEOUT = 300


def lock_name(machine: str) -> str:
    """The name of the machine's lock; the Buildbot glue uses it for a ``util.MasterLock`` so two
    bisects never share a machine.  Inside one farm, the machine's one driver serialises its steps and
    its release with a lock of its own."""
    return f"farm-machine-{machine}"


class PowerError(BuildbotKernelError):
    pass


class ShellPower:
    """Power control through the admin's commands (ssh reboot, ipmitool, a PDU's CLI, ...)."""

    def __init__(self, soft_reboot: str, power_cycle: str, timeout: float = POWER_COMMAND_TIMEOUT):
        if not power_cycle and not soft_reboot:
            raise ValueError("a machine needs a soft_reboot or a power_cycle command")
        self.soft_cmd = soft_reboot
        self.cycle_cmd = power_cycle or soft_reboot
        self.timeout = timeout

    def _run(self, cmd: str):
        def run():
            try:
                p = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True,
                                   timeout=self.timeout)
            except subprocess.TimeoutExpired:
                raise PowerError(f"{cmd!r} did not finish within {self.timeout}s") from None
            if p.returncode != 0:
                raise PowerError(f"{cmd!r} exited {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}")
        return threads.deferToThread(run)

    def soft_reboot(self):
        return self._run(self.soft_cmd or self.cycle_cmd)

    def power_cycle(self):
        return self._run(self.cycle_cmd)


class MachineDriver:
    """One machine as the bisect builder's tester.

    ``machine`` is a validated ``[[machine]]`` (docs/settings.md); ``server_url`` the farm server as the
    machine reaches it (``http://10.0.2.2:8011`` for a QEMU guest); ``public_base`` the images' base
    URL in index.json, rewritten to ``server_url`` in instructions; ``initrd`` the local OS handed to
    every candidate when the machine has no disk of its own (QEMU machines); ``power`` anything with
    ``soft_reboot()`` and ``power_cycle()`` (plain or Deferred results), and optionally ``lost_power()``:
    why the machine is off though nobody switched it off (None while it is on or was never started).
    """

    def __init__(self, machine: Machine, registry: Registry, power, server_url: str, *, public_base: str = "",
                 initrd: BootFile | None = None, reactor=None, clock=time.time, index_path: str = "",
                 lock: defer.DeferredLock | None = None):
        from twisted.internet import reactor as default_reactor

        self.machine = machine
        self.name = machine.name
        self.registry = registry
        self.power = power
        self.server_url = server_url
        self.public_base = public_base
        self.initrd = initrd
        self.reactor = reactor or default_reactor
        self.clock = clock
        # shared by every driver of this machine in one master (the farm service keeps it across reconfigs)
        self.lock = lock or defer.DeferredLock()
        self.index_path = index_path  # the image tree's index.json: where a default_kernel name is found
        self._cancelled = 0  # the owner build whose steps end now (cancel)
        self._current: tuple[int, object] | None = None  # (owner build, finish) of the attempt under way

    @property
    def lock_name(self) -> str:
        return lock_name(self.name)

    @property
    def infra_limit(self) -> int:
        return self.machine.retries + 1

    def run_step(self, image_entry: dict, test_command: str, mode: str, owner: str = "",
                 owner_build: int = 0) -> defer.Deferred:
        """Boot ``image_entry`` (an index.json entry), run ``test_command`` there; fires a StepOutcome.
        ``owner_build`` is the Buildbot build holding the machine: when it ends, the farm releases it."""
        return self.lock.run(self._run_step, image_entry, test_command, mode, owner, owner_build)

    def cancel(self, owner_build: int, reason: str) -> None:
        """The owner's build is being stopped: its attempt under way ends now, no retry follows, and
        a step it had queued does not start (each ends with ``StepOutcome.cancelled``).  The machine is
        sent home by :meth:`release` once the build has ended."""
        if not owner_build:
            return
        self._cancelled = owner_build
        if self._current is not None and self._current[0] == owner_build:
            self._current[1](AttemptEnd("cancelled", f"cancelled: {reason}"))

    def release(self, only_build: int = 0) -> defer.Deferred:
        """The owner's work ended: free the machine and send it to its default kernel, or to stage 1.
        ``only_build``: release only if that build still holds the machine (a later owner keeps it).
        Waits for a step still running on the machine."""
        return self.lock.run(self._release, only_build)

    @inlineCallbacks
    def _release(self, only_build):
        state = self.registry.get(self.name)
        if only_build and state.owner_build != only_build:
            return
        entry, default = None, self.machine.default_kernel
        if default:
            try:
                entry = yield threads.deferToThread(default_kernel.resolve, self.name, default, self.index_path)
            except default_kernel.DefaultKernelError as e:
                log.warning("farm: %s; %s goes back to stage 1 instead", e, self.name)
        a = None
        if entry is not None:
            try:
                a = make_assignment(self.machine, entry, "true", "boot", self.server_url,
                                    public_base=self.public_base, initrd=self.initrd, now=self.clock())
            except InstructionError as e:
                log.warning("farm: [[machine]] (%r).default_kernel: %s; back to stage 1 instead", self.name, e)
        if not only_build or self.registry.get(self.name).owner_build == only_build:
            self.registry.release(self.name, a)

    @inlineCallbacks
    def _run_step(self, image_entry, test_command, mode, owner, owner_build=0):
        state = self.registry.get(self.name)
        if state.state == "broken":
            return StepOutcome("skip", reason=f"machine {self.name} is broken: {state.broken_reason}",
                               machine_broken=True)
        ends: list[AttemptEnd] = []
        for attempt in range(1, self.machine.retries + 2):
            if owner_build and self._cancelled == owner_build:
                return StepOutcome("skip", reason="cancelled: the build was stopped", cancelled=True,
                                   attempts=[f"attempt {i + 1}: {e.kind}: {e.reason}" for i, e in enumerate(ends)])
            a = make_assignment(self.machine, image_entry, test_command, mode, self.server_url,
                                public_base=self.public_base, initrd=self.initrd, attempt=attempt,
                                now=self.clock())
            self.registry.assign(a, owner, owner_build)
            end = yield self._attempt(a, first=attempt == 1, owner_build=owner_build)
            if end.kind == "cancelled":
                self.registry.withdraw(self.name)
                return StepOutcome("skip", reason=end.reason, cancelled=True,
                                   attempts=[f"attempt {i + 1}: {e.kind}: {e.reason}" for i, e in
                                             enumerate([*ends, end])])
            end = steplogic.check_uname(end, a.image)
            ends.append(end)
            log.info("farm: %s %s attempt %d: %s: %s", self.name, a.image, attempt, end.kind, end.reason)
            if end.kind in ("infra", "mismatch"):
                streak = self.registry.note_infra_failure(self.name)
            else:
                self.registry.note_machine_ok(self.name)
                streak = 0
            if end.kind == "mismatch":
                self.registry.flag(self.name, end.reason)
            if not steplogic.should_retry(end) or streak >= self.infra_limit:
                break
        streak = self.registry.get(self.name).infra_failures
        outcome = steplogic.conclude(ends, mode, streak, self.infra_limit)
        if outcome.machine_broken:
            self.registry.mark_broken(self.name, outcome.reason)
        return outcome

    def _attempt(self, a, first: bool, owner_build: int = 0) -> defer.Deferred:
        """Fires with the AttemptEnd of one attempt."""
        boot_timeout = self.machine.boot_timeout
        test_timeout = self.machine.test_timeout
        poll = self.machine.poll
        done: defer.Deferred = defer.Deferred()
        st = {"phase": "assigned", "since": self.clock(), "powered": False, "timer": None, "switching": 0}
        lost_power = getattr(self.power, "lost_power", None)
        watch = task.LoopingCall(lambda: check_power())
        watch.clock = self.reactor

        def finish(end: AttemptEnd):
            if done.called:
                return
            if st["timer"] and st["timer"].active():
                st["timer"].cancel()
            if watch.running:
                watch.stop()
            self.registry.unsubscribe(self.name, on_event)
            self._current = None
            done.callback(end)

        def arm(seconds):
            if st["timer"] and st["timer"].active():
                st["timer"].cancel()
            st["since"] = self.clock()
            st["timer"] = self.reactor.callLater(seconds, on_timeout, seconds)

        def on_event(ev: Event):
            if ev.token != a.token:
                return
            if ev.kind == "reset":
                finish(steplogic.from_reset(ev.report.get("phase", "")))
            elif ev.kind == "final":
                finish(steplogic.from_report(ev.report))
            elif ev.kind in ("fetched", "kexec"):
                st["phase"] = ev.kind
                arm(boot_timeout)
            elif ev.kind == "running":
                st["phase"] = "running"
                arm(test_timeout)

        def check_power():
            """A machine whose power the master sees (QEMU: its process) went off in the middle of the
            attempt: an infrastructure failure at once, never a verdict (README, "When things fail")."""
            why = None if st["switching"] else lost_power()
            if why:
                self.registry.withdraw(self.name)
                finish(AttemptEnd("infra", f"the machine lost power ({st['phase']}): {why}"))

        def switched(result):
            st["switching"] -= 1
            return result

        def power(cycle: bool):
            st["powered"] = True
            arm(boot_timeout)
            action = self.power.power_cycle if cycle else self.power.soft_reboot
            st["switching"] += 1  # while the power action runs the machine may be off on purpose
            d = defer.maybeDeferred(action)
            d.addBoth(switched)

            def failed(f):
                self.registry.withdraw(self.name)
                finish(AttemptEnd("infra", f"power {'cycle' if cycle else 'reboot'} failed: "
                                           f"{f.getErrorMessage()}"))
            d.addErrback(failed)

        def on_timeout(waited):
            if st["phase"] == "assigned" and not st["powered"]:
                log.info("farm: %s did not pick up its instructions while polling; rebooting it", self.name)
                power(cycle=False)
                return
            self.registry.withdraw(self.name)
            finish(steplogic.from_timeout(st["phase"], waited))

        self.registry.subscribe(self.name, on_event)
        self._current = (owner_build, finish)
        if lost_power is not None:
            watch.start(1.0, now=False)
        if first and self.registry.is_polling(self.name, within=3 * poll + 2):
            arm(3 * poll + 5)  # it is polling: the instructions alone start it
        else:
            power(cycle=not first)
        return done
