"""Testers: what decides good / bad / skip for one image during a Buildbot bisect.

The interface is one method, ``test(image, sha) -> Deferred`` firing ``(verdict, details)`` (details: a
JSON-able dict for the result), or failing with :class:`TesterAbort` (the bisect stops: the tester broke,
which says nothing about the commit) or :class:`Interrupted` (the bisect build was stopped).

* :class:`LocalCommandTester` runs the test command on a build worker, through the "bisect-test"
  builder (steps in :mod:`buildbot_kernel.steps.bisect_test`): the image is downloaded there and
  sha256-checked, the command gets the ``BISECT_*`` environment, its exit status maps as for ``git
  bisect run`` (:func:`buildbot_kernel.bisect.tester.verdict_for_exit`).
* :class:`MachineTester` adapts a test-farm machine driver (``run_step(image_entry, command, mode,
  owner)`` firing an outcome with ``verdict``): the farm is looked up as the master service named
  ``farm`` whose ``driver(name)`` answers (possibly through a Deferred: the farm may still be fetching
  its stage-1 kernel) with the driver.  A machine that the farm marks broken stops the bisect with that
  reason: an infrastructure failure is never a verdict, and further steps would only be skipped.  The
  machine is held in the name of the build that runs the tester: when that build ends (finished, stopped,
  or lost with a master restart) the farm sends the machine back to its default kernel.
"""

from __future__ import annotations

from buildbot.process.results import CANCELLED, RETRY
from twisted.internet import defer

from buildbot_kernel import buildbot_adapter as bb
from buildbot_kernel.bisect.engine import VERDICTS, BisectInputError
from buildbot_kernel.bisect.request import DEFAULT_TIMEOUT, LOCAL_TESTER, BisectRequest
from buildbot_kernel.bisect.tester import TesterAbort, verdict_for_exit
from buildbot_kernel.buildbot_adapter import named_service
from buildbot_kernel.imagetree.record import ImageRecord
from buildbot_kernel.master.farm_service import FARM_SERVICE
from buildbot_kernel.steps.subbuilds import Interrupted, SubBuild

EXIT_PROPERTY = "bisect_exit"
# read by the bisect-test builder (steps/bisect_test.py, which imports this module: so not imported here;
# tests/unit/test_master_access.py checks that both name the same property)
TIMEOUT_PROPERTY = "bisect_timeout"


class LocalCommandTester:
    def __init__(self, step, scheduler_name: str, command: str, bisect_id: str, image_dir,
                 timeout: int = DEFAULT_TIMEOUT):
        self.step = step  # the bisect step currently running (parent of the test builds)
        self.scheduler_name = scheduler_name
        self.command = command
        self.timeout = timeout  # seconds; past it the worker kills the command's process group: skip
        self.bisect_id = bisect_id
        self.image_dir = image_dir  # ImageRecord -> its directory on the master
        self.current: SubBuild | None = None

    @defer.inlineCallbacks
    def test(self, image: ImageRecord, sha: str):
        props = {
            "bisect_id": self.bisect_id, "bisect_sha": sha, "bisect_image": image.name,
            "bisect_image_url": image.url, "bisect_image_src": self.image_dir(image),
            "bisect_image_files": {n: f["sha256"] for n, f in image.files.items()},
            "bisect_command": self.command, TIMEOUT_PROPERTY: self.timeout,
        }
        self.current = SubBuild.trigger(self.step, self.scheduler_name, f"test {sha[:12]}", properties=props,
                                        reason=f"bisect {self.bisect_id}: test {sha[:12]} ({image.name})")
        results = yield self.current.wait()
        build = yield self.current.last_build()
        if results in (CANCELLED, RETRY) and not (build and EXIT_PROPERTY in build["properties"]):
            raise Interrupted(f"the test build of {sha[:12]} was cancelled")
        if build is None or EXIT_PROPERTY not in build["properties"]:
            where = f"build {build['number']} of bisect-test" if build else "the bisect-test builder"
            state = build.get("state_string", "") if build else ""
            raise TesterAbort(-1, f"the test command did not run ({where}: {state}); an infrastructure "
                                  "failure is never a verdict")
        status = int(build["properties"][EXIT_PROPERTY])
        verdict = verdict_for_exit(status)  # raises TesterAbort above 127
        return verdict, {"tester": LOCAL_TESTER, "exit_status": status, "test_build": build["buildid"],
                         "test_build_number": build["number"]}

    def cancel(self, reason: str) -> None:
        if self.current is not None:
            self.current.cancel(reason)


class MachineTester:
    def __init__(self, driver, command: str, mode: str, owner: str, owner_build: int = 0):
        self.driver = driver
        self.command = command
        self.mode = mode
        self.owner = owner
        self.owner_build = owner_build  # the build whose end releases the machine

    @defer.inlineCallbacks
    def test(self, image: ImageRecord, sha: str):
        outcome = yield self.driver.run_step(dict(image.entry), self.command, self.mode, self.owner,
                                             self.owner_build)
        if getattr(outcome, "cancelled", False):
            raise Interrupted(outcome.reason)
        if getattr(outcome, "machine_broken", False):
            raise TesterAbort(-1, outcome.reason or f"machine {self.driver.name} is broken")
        if outcome.verdict == "error":  # exit status above 127 on the machine (bbk_verdict)
            raise TesterAbort(-1, f"the test command broke on machine {self.driver.name}: {outcome.reason}")
        if outcome.verdict not in VERDICTS:
            raise TesterAbort(-1, f"machine {self.driver.name} answered {outcome.verdict!r}")
        details = outcome.to_json() if hasattr(outcome, "to_json") else {"verdict": outcome.verdict}
        accel = self.driver.registry.get(self.driver.name).accel  # a QEMU machine's, for the step's log
        return outcome.verdict, {"tester": self.driver.name, **details, **({"accel": accel} if accel else {})}

    def cancel(self, reason: str) -> None:
        """The build is being stopped: the machine's attempt under way ends now (the machine goes home
        when the build has ended)."""
        if hasattr(self.driver, "cancel"):
            self.driver.cancel(self.owner_build, reason)


@defer.inlineCallbacks
def test_output(master, buildid: int):
    """The test command's own output in the "bisect-test" build ``buildid`` (stdout and stderr lines; the
    header lines list the worker's whole environment, which is never shown or published)."""
    text = ""
    for step in (yield bb.build_steps(master, buildid)) or []:
        if step["name"] != "test command":
            continue
        for lg in (yield bb.step_logs(master, step["stepid"])) or []:
            lines = yield bb.log_lines(master, lg, channels="oe")
            text += f"--- {lg['name']} ---\n" + "".join(line + "\n" for line in lines)
    return text


@defer.inlineCallbacks
def make_tester(step, request: BisectRequest, bisect_id: str, test_scheduler: str, image_dir):
    """Fires with the tester the request names; a machine needs the farm service (else a ``tester``
    input error, as when the farm could not be set up)."""
    if request.tester == LOCAL_TESTER:
        return LocalCommandTester(step, test_scheduler, request.command, bisect_id, image_dir, request.timeout)
    farm = named_service(step.master, FARM_SERVICE)
    if farm is None:
        raise BisectInputError("tester", f"machine {request.tester!r} is configured but no test farm runs in "
                               "this master; use the local command tester")
    try:
        driver = yield defer.maybeDeferred(farm.driver, request.tester)
    except KeyError as e:
        raise BisectInputError("tester", str(e.args[0]) if e.args else str(e)) from None
    except Exception as e:  # the farm could not be set up (no stage-1 kernel, no QEMU, ...)
        raise BisectInputError("tester", f"the test farm is not available: {e}") from None
    return MachineTester(driver, request.command, request.mode, owner=f"bisect {bisect_id}",
                         owner_build=getattr(step.build, "buildid", 0) or 0)
