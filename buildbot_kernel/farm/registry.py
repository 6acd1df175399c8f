"""What the server knows about each test machine, kept in one JSON file so a master restart keeps it.

State machine per machine (what the UI shows):

- ``idle``: nothing assigned (the machine may be polling from stage 1 or stage 2);
- ``booting``: an assignment is written; the machine fetched it and is downloading / kexec'ing;
- ``testing``: the candidate kernel reported it is up and runs the test command;
- ``broken``: repeated infrastructure failures; nothing is assigned until an admin repairs it.

When the owner's work ends (the bisect or test build finished, was stopped, or the master restarted),
:meth:`Registry.release` frees the machine and sends it home: its default kernel as an assignment of
its own (``extra.default``), or back to stage 1 (``to_stage1``: a poll from a candidate's stage 2 is
answered ``REBOOT=1`` until the machine polls from stage 1).

The assignment's ``phase`` (assigned -> fetched -> kexec -> running) tells the driver where an attempt
stopped when a timeout fires, which is what separates "the candidate hangs" from "the machine never
came back".  Reports are accepted only with the live single-use token; everything refused is counted
and logged (rate-limited) but never written to disk on its own, so a flood of refused requests costs no
disk work.  The machines' keys live here too (never in the state file): the HTTP resource asks
:meth:`Registry.authorized` before anything else.  No Twisted here: events go to plain callbacks, which
the driver turns into Deferreds, and the state file is written by ``writer`` (the master passes one that
writes off the reactor thread).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.farm.instructions import Assignment, TokenLedger
from buildbot_kernel.farm.keys import key_matches
from buildbot_kernel.imagetree.atomic import atomic_write
from buildbot_kernel.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

STATES = ("idle", "booting", "testing", "broken")
FINAL_RESULTS = ("good", "bad", "skip", "error", "boot-error")  # error: the test broke (exit above 127)
PROGRESS_RESULTS = ("kexec", "running")
# an attempt's phases in order; a progress report counts only when it moves the attempt forward (the
# candidate kernel has the key and the live token: a loop of reports must not rewrite the state file)
PHASES = ("assigned", "fetched", "kexec", "running")
REPORT_FIELDS = ("result", "stage", "token", "uname", "error", "reason", "log")
LOG_TAIL_CHARS = 4000  # the end of the test's output
FIELD_CHARS = 500  # every other field: a word or one line for people
KEY_PLACEHOLDER = "<machine key>"


@dataclass
class Event:
    """Something a machine did: ``fetched``, ``kexec``, ``running``, ``final`` or ``reset``.

    ``reset``: the machine asked for instructions again while its candidate should have been running,
    i.e. the candidate rebooted (panic, triple fault) without reporting.
    """

    kind: str
    machine: str
    token: str
    report: dict = field(default_factory=dict)
    at: float = 0.0


@dataclass
class MachineState:
    name: str
    state: str = "idle"
    last_kernel: str = ""
    last_report: dict = field(default_factory=dict)
    last_poll: float = 0.0
    last_seen: float = 0.0  # any request from the machine: a machine that just reported polls next
    flagged: str = ""  # why an admin should look at it (uname mismatch, ...) even though it works
    broken_reason: str = ""
    infra_failures: int = 0  # consecutive
    owner: str = ""  # who holds the machine (a bisect), for the UI
    owner_build: int = 0  # the Buildbot build of the owner: its end releases the machine
    to_stage1: bool = False  # released without a default kernel: reboot into stage 1 when it next polls
    assignment: dict | None = None
    ledger: dict = field(default_factory=dict)
    refused: int = 0
    last_refused: dict = field(default_factory=dict)
    accel: str = ""  # a QEMU machine's accelerator (kvm or tcg), once its VM started

    def public(self) -> dict:
        """The UI's view: no live token (it would let anyone who can read the page forge a report)."""
        d = asdict(self)
        d.pop("ledger")
        a = d.pop("assignment")
        d["assignment"] = None if a is None else {
            k: a[k] for k in ("image", "mode", "attempt", "phase", "issued_at")}
        return d


def kept_report(fields: dict[str, str], key: str) -> dict[str, str]:
    """The report fields the server keeps, shows and stores beside images: the machine key replaced in
    every field (a test that prints /proc/cmdline must not publish it), then each field cut to its bound.
    In that order: a cut through the key would leave the part after the cut, which no longer matches."""
    out = {}
    for k in REPORT_FIELDS:
        v = str(fields.get(k, ""))
        if key:
            v = v.replace(key, KEY_PLACEHOLDER)
        out[k] = v[-LOG_TAIL_CHARS:] if k == "log" else v[:FIELD_CHARS]
    return out


class UnknownMachine(BuildbotKernelError, KeyError):
    pass


def write_state(path: str, text: str) -> None:
    """The default writer: atomic, private (the file holds live tokens)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, text, mode=0o600)


def read_snapshot(machines: list[str], path: str | os.PathLike) -> dict:
    """:meth:`Registry.snapshot` of the state file another process keeps (read only; blocking).

    A file being replaced is read whole (the writer renames it into place); a missing or damaged one shows
    the configured machines as never seen, rather than no machines."""
    try:
        return Registry(machines, path).snapshot()
    except (OSError, ValueError, TypeError, AttributeError):  # AttributeError: JSON that is not an object
        return Registry(machines).snapshot()


class Registry:
    """All machines' state; every change is written through to ``path`` (atomically) when given.

    ``keys`` maps machine name -> its key (see :mod:`buildbot_kernel.farm.keys`); a machine without one
    is refused every request.  ``writer(path, text)`` stores the state file."""

    def __init__(self, machines: list[str], path: str | os.PathLike | None = None,
                 clock: Callable[[], float] = time.time, keys: dict[str, str] | None = None,
                 writer: Callable[[str, str], object] = write_state):
        self.path = os.fspath(path) if path else None
        self.clock = clock
        self.keys = dict(keys or {})
        self.writer = writer
        self.refusals = RateLimitedLog(log.warning)
        self.machines: dict[str, MachineState] = {n: MachineState(n) for n in machines}
        self.ledgers: dict[str, TokenLedger] = {n: TokenLedger() for n in machines}
        self._listeners: dict[str, list[Callable[[Event], None]]] = {n: [] for n in machines}
        if self.path and os.path.exists(self.path):
            self._load()

    # -- persistence -------------------------------------------------------------------------------
    def _load(self) -> None:
        with open(self.path) as f:
            data = json.load(f)
        for name, d in data.get("machines", {}).items():
            if name not in self.machines:
                continue  # removed from the settings: forget it
            known = {k: v for k, v in d.items() if k in MachineState.__dataclass_fields__}
            self.machines[name] = MachineState(**known)
            self.ledgers[name] = TokenLedger(history=dict(d.get("ledger", {})))

    def save(self) -> None:
        if not self.path:
            return
        for name, m in self.machines.items():
            m.ledger = dict(self.ledgers[name].history)
        data = {"schema": 1, "machines": {n: asdict(m) for n, m in self.machines.items()}}
        self.writer(self.path, json.dumps(data, indent=1, sort_keys=True))

    # -- access ----------------------------------------------------------------------------------------
    def authorized(self, name: str, presented: str | bytes | None) -> bool:
        """The request for ``name`` carries that machine's key (constant-time; unknown machine: False)."""
        return key_matches(self.keys.get(name, ""), presented)

    # -- lookups -----------------------------------------------------------------------------------
    def get(self, name: str) -> MachineState:
        try:
            return self.machines[name]
        except KeyError:
            raise UnknownMachine(name) from None

    def assignment(self, name: str) -> Assignment | None:
        a = self.get(name).assignment
        return Assignment.from_json(a) if a else None

    def snapshot(self) -> dict:
        return {"schema": 1, "machines": [m.public() for m in self.machines.values()]}

    def is_polling(self, name: str, within: float) -> bool:
        """The machine talked to us recently (stage 1 or 2 polls, or stage 2 just reported and polls
        next), so writing the instructions is enough to start it."""
        return self.clock() - self.get(name).last_seen <= within

    # -- listeners ---------------------------------------------------------------------------------
    def subscribe(self, name: str, fn: Callable[[Event], None]) -> None:
        self.get(name)
        self._listeners[name].append(fn)

    def unsubscribe(self, name: str, fn: Callable[[Event], None]) -> None:
        if fn in self._listeners.get(name, []):
            self._listeners[name].remove(fn)

    def _emit(self, ev: Event) -> None:
        for fn in list(self._listeners[ev.machine]):
            try:
                fn(ev)
            except Exception:  # a listener bug must not break the HTTP answer to a machine
                log.exception("farm listener failed on %s", ev)

    # -- the driver's side -------------------------------------------------------------------------
    def assign(self, a: Assignment, owner: str = "", owner_build: int = 0) -> None:
        """"Set the default kernel": from now on the machine's next POST /boot gets ``a``."""
        m = self.get(a.machine)
        if m.state == "broken":
            raise RuntimeError(f"machine {a.machine} is broken ({m.broken_reason}); repair it first")
        self.ledgers[a.machine].issue(a.token)
        a.phase = "assigned"
        m.assignment = a.to_json()
        m.state = "booting"
        m.to_stage1 = False
        if owner:
            m.owner, m.owner_build = owner, owner_build
        self.save()

    def release(self, name: str, default: Assignment | None = None) -> None:
        """The owner's work ended: the machine is free, and goes back to ``default`` (its default kernel,
        an assignment marked ``extra["default"]``) or, without one, to stage 1."""
        m = self.get(name)
        was = m.owner
        m.owner, m.owner_build = "", 0
        if m.state != "broken":
            self.ledgers[name].withdraw()
            m.assignment, m.state = None, "idle"
            if default is not None:
                default.extra["default"] = True
                self.ledgers[name].issue(default.token)
                default.phase = "assigned"
                m.assignment = default.to_json()
            m.to_stage1 = default is None
            log.info("farm: %s released by %s; back to %s", name, was or "nobody",
                     default.image if default is not None else "stage 1")
        self.save()

    def owned_by_build(self, buildid: int) -> list[str]:
        """The machines the build ``buildid`` holds."""
        return [n for n, m in self.machines.items() if buildid and m.owner_build == buildid]

    def withdraw(self, name: str) -> None:
        """Stop offering the current assignment; its token becomes stale."""
        m = self.get(name)
        self.ledgers[name].withdraw()
        m.assignment = None
        if m.state != "broken":
            m.state = "idle"
        self.save()

    def note_infra_failure(self, name: str) -> int:
        m = self.get(name)
        m.infra_failures += 1
        self.save()
        return m.infra_failures

    def note_machine_ok(self, name: str) -> None:
        m = self.get(name)
        if m.infra_failures:
            m.infra_failures = 0
            self.save()

    def flag(self, name: str, reason: str) -> None:
        m = self.get(name)
        m.flagged = reason
        log.warning("farm: machine %s flagged: %s", name, reason)
        self.save()

    def mark_broken(self, name: str, reason: str) -> None:
        m = self.get(name)
        self.ledgers[name].withdraw()
        m.assignment = None
        m.state = "broken"
        m.broken_reason = reason
        log.error("farm: machine %s is broken: %s", name, reason)
        self.save()

    def repair(self, name: str) -> None:
        """An admin fixed the machine: back to idle, counters cleared."""
        m = self.get(name)
        m.state, m.broken_reason, m.flagged, m.infra_failures = "idle", "", "", 0
        self.save()

    def note_accel(self, name: str, accel: str) -> None:
        m = self.get(name)
        if m.accel != accel:
            m.accel = accel
            self.save()

    def set_owner(self, name: str, owner: str) -> None:
        self.get(name).owner = owner
        self.save()

    # -- the machine's side (called by the HTTP resource) ------------------------------------------
    def peek(self, name: str) -> Assignment | None:
        """What :meth:`boot_request` would hand out now, changing nothing (``GET /boot``)."""
        m = self.get(name)
        a = self.assignment(name)
        if a is None or m.state == "broken" or a.phase in ("kexec", "running"):
            return None
        return a

    def boot_request(self, name: str, stage: str = "") -> Assignment | None:
        """The machine asks for its instructions (``POST /boot``, from ``stage`` 1 or 2): the live
        assignment, or None (wait, or :meth:`wants_stage1`).
        A request while the candidate should be running means the candidate went away without a report:
        a ``reset`` event, and no instructions until the driver decides (it may retry, with a new token)."""
        m = self.get(name)
        now = self.clock()
        m.last_poll = m.last_seen = now
        if m.to_stage1 and stage == "1":
            m.to_stage1 = False  # home
            self.save()
        a = self.assignment(name)
        if a is None or m.state == "broken":
            return None
        if a.phase in ("kexec", "running"):
            self.ledgers[name].withdraw()
            m.assignment = None
            m.state = "idle"
            self.save()
            self._emit(Event("reset", name, a.token, {"phase": a.phase}, now))
            return None
        if a.phase == "assigned":
            a.phase = "fetched"
            m.assignment = a.to_json()
            self.save()
            self._emit(Event("fetched", name, a.token, {}, now))
        return a

    def wants_stage1(self, name: str) -> bool:
        """A released machine without a default kernel that has not polled from stage 1 since: the answer
        to its poll is to reboot (its firmware boots stage 1)."""
        m = self.get(name)
        return m.to_stage1 and m.assignment is None and m.state != "broken"

    def test_command(self, name: str, token: str) -> str | None:
        a = self.assignment(name)
        if a is None or self.ledgers[name].judge(token) != "ok" or a.token != token:
            return None
        return a.test_command

    def report(self, name: str, fields: dict[str, str], peer: str = "") -> tuple[bool, str]:
        """POST /report.  Returns (accepted, message); refused reports are logged and counted."""
        m = self.get(name)
        now = self.clock()
        result = fields.get("result", "")
        token = fields.get("token", "")
        if result not in FINAL_RESULTS + PROGRESS_RESULTS:
            return self._refuse(m, fields, peer, "unknown result")
        verdict = self.ledgers[name].judge(token)
        if verdict != "ok":
            return self._refuse(m, fields, peer, f"{verdict} token")
        a = self.assignment(name)
        m.last_seen = now
        report = kept_report(fields, self.keys.get(name, ""))
        report["at"] = now
        report["image"] = a.image if a else ""
        if result in PROGRESS_RESULTS:
            if a.phase in PHASES and PHASES.index(result) <= PHASES.index(a.phase):
                return True, "ok"  # nothing new: a repeated or late progress report changes nothing
            a.phase = result
            m.assignment = a.to_json()
            if result == "running" and not a.extra.get("default"):
                m.state = "testing"
            self.save()
            self._emit(Event(result, name, token, report, now))
            return True, "ok"
        self.ledgers[name].consume(token)
        m.assignment = None
        m.state = "idle"
        m.last_report = report
        if result != "boot-error" and report["uname"]:
            m.last_kernel = report["uname"]
        self.save()
        self._emit(Event("final", name, token, report, now))
        return True, "ok"

    def _refuse(self, m: MachineState, fields: dict, peer: str, cause: str) -> tuple[bool, str]:
        """Count and remember a refused report.  What is kept goes through :func:`kept_report` like an
        accepted one (the sender is a key holder, maybe a candidate kernel running a commit's code: its
        fields must not put the key, or 256 KiB, on the dashboard and into the state file).  ``cause`` is
        one of a few fixed words, the rate limiter's key: text the sender chose would make every report a
        cause of its own and every one a log line."""
        m.refused += 1
        kept = kept_report(fields, self.keys.get(m.name, ""))
        why = cause
        if cause == "unknown result":
            why = (f"unknown result {kept['result'][:20]!r} (expected one of "
                   f"{list(FINAL_RESULTS + PROGRESS_RESULTS)})")
        m.last_refused = {"at": self.clock(), "why": why, "peer": peer, "result": kept["result"],
                          "token": kept["token"][:8]}
        self.refusals.warning(f"{m.name} {cause}", "farm: refused report for %s from %s: %s", m.name,
                              peer or "?", why)
        return False, why
