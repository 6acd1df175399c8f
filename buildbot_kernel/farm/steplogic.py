"""How one bisect step's attempts turn into a verdict: pure rules, no Twisted, no clock.

The rule that matters most: an infrastructure failure is never ``bad``.  A step that could not be tested
is ``skip`` (git bisect skips it) and, when the machine keeps failing, the machine is marked broken and
the bisect stops with that reason instead of blaming commits for a dead power switch.

Each attempt ends in one :class:`AttemptEnd`:

- ``verdict``: stage 2 reported good/bad/skip, or error when the test command itself broke (exit status
  above 127: no verdict, the bisect stops); its ``uname -r`` still has to match the image name;
- ``image``: the image itself cannot boot here (sha256 mismatch, kexec -l refuses it, file missing):
  retrying cannot help, the step is ``skip``;
- ``candidate``: the candidate kernel was kexec'd and then hung, crashed or rebooted before stage 2 came
  up (a boot failure: ``bad`` in mode ``boot``, ``skip`` in mode ``test``), or its test hung;
- ``infra``: the machine did not come back, stage 1 could not download, kexec -e returned: power-cycle
  and retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# boot-error codes (scripts/stage1/bbk-lib.sh) that are the image's fault, not the machine's
IMAGE_ERRORS = ("sha256", "kexec-load", "download-missing", "modules")


@dataclass
class AttemptEnd:
    kind: str  # verdict | image | candidate | infra (| mismatch, cancelled: set by the driver)
    reason: str
    result: str = ""  # verdict: good | bad | skip | error
    uname: str = ""
    log_tail: str = ""
    boot_failure: bool = False  # candidate: it never reached stage 2


@dataclass
class StepOutcome:
    """What the bisect engine gets for one step."""

    verdict: str  # good | bad | skip, or error (the test broke: not a verdict)
    uname: str = ""
    log_tail: str = ""
    reason: str = ""
    infra_failures: int = 0
    machine_broken: bool = False
    attempts: list[str] = field(default_factory=list)  # one line per attempt, for the step log
    cancelled: bool = False  # the owner's build was stopped: no verdict at all

    def to_json(self) -> dict:
        return dict(self.__dict__)


def from_report(report: dict) -> AttemptEnd:
    """A final report (``result`` good/bad/skip/error/boot-error) as an attempt end."""
    result = report.get("result", "")
    reason = report.get("reason", "")
    if result == "boot-error":
        code = report.get("error", "")
        where = f"stage {report.get('stage') or '?'}"
        kind = "image" if code in IMAGE_ERRORS else "infra"
        return AttemptEnd(kind, f"boot-error ({code}, {where}): {reason}", log_tail=report.get("log", ""))
    return AttemptEnd("verdict", reason, result=result, uname=report.get("uname", ""),
                      log_tail=report.get("log", ""))


def from_timeout(phase: str, waited: float) -> AttemptEnd:
    """No final report in time; ``phase`` is how far the attempt got."""
    if phase == "running":
        return AttemptEnd("candidate", f"the test did not finish within {waited:.0f}s (hang)")
    if phase == "kexec":
        return AttemptEnd("candidate", f"the candidate did not come up within {waited:.0f}s after kexec "
                                       "(hang or crash before stage 2)", boot_failure=True)
    if phase == "fetched":
        return AttemptEnd("infra", f"stage 1 fetched the instructions but neither kexec'd nor reported "
                                   f"within {waited:.0f}s")
    return AttemptEnd("infra", f"the machine did not ask for its instructions within {waited:.0f}s")


def from_reset(phase: str) -> AttemptEnd:
    """The machine came back to stage 1 while the candidate should have been running."""
    if phase == "running":
        return AttemptEnd("candidate", "the candidate rebooted during the test without reporting")
    return AttemptEnd("candidate", "the candidate rebooted before stage 2 came up (panic or reset)",
                      boot_failure=True)


def check_uname(end: AttemptEnd, image: str) -> AttemptEnd:
    """A verdict from a kernel that is not the image (kexec fell back to the old one) decides nothing."""
    if end.kind == "verdict" and end.uname != image:
        return AttemptEnd("mismatch", f"uname -r is {end.uname!r}, not the image {image!r}: the machine "
                                      "did not run the candidate", uname=end.uname, log_tail=end.log_tail)
    return end


def should_retry(end: AttemptEnd) -> bool:
    return end.kind in ("candidate", "infra")


def conclude(ends: list[AttemptEnd], mode: str, infra_streak: int, infra_limit: int) -> StepOutcome:
    """The step's outcome from its attempts (the last one decides), given the machine's consecutive
    infrastructure failures including this step's."""
    last = ends[-1]
    lines = [f"attempt {i + 1}: {e.kind}: {e.reason}" for i, e in enumerate(ends)]
    infra = sum(1 for e in ends if e.kind in ("infra", "mismatch"))
    common = dict(log_tail=last.log_tail, infra_failures=infra, attempts=lines)
    if last.kind == "verdict":
        return StepOutcome(last.result, uname=last.uname, reason=last.reason, **common)
    if last.kind == "candidate":
        bad = mode == "boot" and last.boot_failure
        tag = "boot failure" if last.boot_failure else "test hang"
        return StepOutcome("bad" if bad else "skip", reason=f"{tag} on every attempt: {last.reason}",
                           **common)
    if last.kind == "image":
        return StepOutcome("skip", reason=f"image cannot be booted: {last.reason}", **common)
    if last.kind == "mismatch":
        return StepOutcome("skip", uname=last.uname, reason=last.reason, **common)
    broken = infra_streak >= infra_limit
    reason = f"infrastructure failure: {last.reason}"
    if broken:
        reason = (f"machine broken after {infra_streak} consecutive infrastructure failures; "
                  f"last: {last.reason}")
    return StepOutcome("skip", reason=reason, machine_broken=broken, **common)
