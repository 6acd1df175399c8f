"""The "bisect-test" builder: one run of the local test command on a build worker, for one image.

The image's files travel from the master's image tree to the worker with Buildbot's own file transfer
(no shared filesystem, no image server needed), are checked with ``sha256sum -c`` on the worker, and the
command runs with the ``BISECT_*`` environment (contract in :mod:`buildbot_kernel.bisect.tester`). Its
exit status is stored in the ``bisect_exit`` property for the bisect build.  A verdict is data, not a
failure: good and bad are both green (the summary says which), skip orange; only a test that could not
run (an interrupted command, a status above 127 that aborts the bisect) is purple.  A command the worker kills at a
timeout (it kills the whole process group) is ``skip``, as in the shell command's ``--timeout``.

A test request outlives the bisect build that asked for it when the master dies: Buildbot puts the dead
master's requests back in the queue at the next start, the bisect resumes in a new build and asks for its
own test.  The first step refuses (CANCELLED, nothing run) a request whose bisect build has ended, so the
interrupted step is tested once more, not twice, and never twice at once on one machine.
"""

from __future__ import annotations

import os

from buildbot.plugins import steps, util
from buildbot.process import buildstep
from buildbot.process.results import CANCELLED, EXCEPTION, FAILURE, SUCCESS, WARNINGS
from twisted.internet import defer

from buildbot_kernel import buildbot_adapter as bb
from buildbot_kernel.bisect.engine import BAD, GOOD, SKIP
from buildbot_kernel.bisect.tester import EXIT_SKIP, TesterAbort, exit_status, verdict_for_exit
from buildbot_kernel.steps import WORKER_COMMAND
from buildbot_kernel.steps.bisect_testers import EXIT_PROPERTY

WORKDIR = "bisect"
IMAGE_SUBDIR = "image"
SUMS_FILE = ".bisect.sha256"
TIMEOUT_PROPERTY = "bisect_timeout"  # seconds the test may run (a [[test]]'s timeout); unset: no limit


def sums_text(files: dict) -> str:
    """``sha256sum -c`` input for the image's files (name -> sha256)."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))


class RefuseOrphan(buildstep.BuildStep):
    """Runs nothing for a request whose bisect build is over (see the module docstring)."""

    name = "bisect waits"
    haltOnFailure = True
    hideStepIf = staticmethod(lambda results, step: results == SUCCESS)

    @defer.inlineCallbacks
    def run(self):
        parent = yield bb.waiting_parent(self.master, bb.first_request(self.build).bsid)
        if parent is not None and parent["complete"]:
            self.descriptionDone = [f"not run: the bisect build that asked for it (build {parent['number']}) "
                                    "has ended; a resumed bisect asks again"]
            return CANCELLED
        return SUCCESS


class FetchImage(buildstep.BuildStep):
    """Queues one download per file of the image (the list is only known at run time), then the check."""

    name = "fetch image"
    haltOnFailure = True

    def run(self):
        src = self.getProperty("bisect_image_src")
        files = self.getProperty("bisect_image_files") or {}
        bad = [n for n in files if "/" in n or n.startswith(".")]
        if not src or not files or bad:
            self.descriptionDone = ["no image to fetch" if not bad else f"bad file name {bad[0]!r}"]
            return defer.succeed(FAILURE)
        image_dir = f"{WORKDIR}/{IMAGE_SUBDIR}"
        new = [steps.FileDownload(name=f"download {n}"[:50].replace(" ", "_"), mastersrc=os.path.join(src, n),
                                  workerdest=n, workdir=image_dir, haltOnFailure=True, hideStepIf=True)
               for n in sorted(files)]
        new.append(steps.StringDownload(sums_text(files), workerdest=SUMS_FILE, workdir=image_dir,
                                        name="checksums", haltOnFailure=True, hideStepIf=True))
        new.append(steps.ShellCommand(name="verify image", command=["sha256sum", "--strict", "-c", SUMS_FILE],
                                      workdir=image_dir, haltOnFailure=True, **WORKER_COMMAND,
                                      descriptionDone=["sha256 checked"]))
        bb.add_steps_after_current(self.build, new)
        self.descriptionDone = [f"{self.getProperty('bisect_image')}: {len(files)} files"]
        return defer.succeed(SUCCESS)


class RunTestCommand(buildstep.ShellMixin, buildstep.BuildStep):
    """The maintainer's command; every exit status is a result for the bisect (the property), so the
    step itself only colours the verdict."""

    name = "test command"

    def __init__(self, **kwargs):
        kwargs = self.setupShellMixin({"workdir": WORKDIR, **WORKER_COMMAND, **kwargs})
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        image_dir = os.path.join(self.getProperty("builddir"), WORKDIR, IMAGE_SUBDIR)
        env = {
            "BISECT_SHA": self.getProperty("bisect_sha"),
            "BISECT_IMAGE": self.getProperty("bisect_image"),
            "BISECT_IMAGE_URL": self.getProperty("bisect_image_url"),
            "BISECT_IMAGE_DIR": image_dir,
        }
        limit = self.getProperty(TIMEOUT_PROPERTY)
        extra = {"maxTime": int(limit)} if limit else {}
        cmd = yield self.makeRemoteShellCommand(command=["/bin/sh", "-c", self.getProperty("bisect_command")],
                                                env=env, **extra)
        yield self.runCommand(cmd)
        if cmd.remote_failure_reason in ("timeout", "timeout_without_output"):
            # the worker killed the command's whole process group; a hung test says nothing: skip
            self.setProperty(EXIT_PROPERTY, EXIT_SKIP, self.name)
            self.descriptionDone = ["killed at the timeout: skip"]
            return WARNINGS
        rc = cmd.rc
        if rc is None or cmd.interrupted:
            self.descriptionDone = ["interrupted"]
            return EXCEPTION
        status = exit_status(rc)
        self.setProperty(EXIT_PROPERTY, status, self.name)
        try:
            verdict = verdict_for_exit(status)
        except TesterAbort:
            self.descriptionDone = [f"exit {status}: aborts the bisect"]
            return EXCEPTION
        self.descriptionDone = [f"exit {status}: {verdict}"]
        return {GOOD: SUCCESS, SKIP: WARNINGS, BAD: SUCCESS}[verdict]  # a correct "bad" is data: not red


def bisect_test_factory() -> util.BuildFactory:
    f = util.BuildFactory()
    f.addStep(RefuseOrphan())
    f.addStep(steps.ShellCommand(name="clean image dir", command=["rm", "-rf", IMAGE_SUBDIR], workdir=WORKDIR,
                                 haltOnFailure=True, hideStepIf=True, **WORKER_COMMAND))
    f.addStep(FetchImage())
    f.addStep(RunTestCommand())
    return f
