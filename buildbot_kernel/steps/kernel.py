"""Worker-side kernel build steps: facts and name, compile with progress, release check."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from buildbot.process import buildstep, logobserver
from buildbot.process.results import FAILURE, SKIPPED, SUCCESS
from buildbot.steps.shell import ShellCommand
from twisted.internet import defer, threads

from buildbot_kernel import kbuild_commands, naming
from buildbot_kernel.imagetree.branchorder import is_sha
from buildbot_kernel.imagetree.scan import is_published
from buildbot_kernel.kbuild_output import KbuildProgress
from buildbot_kernel.ledger import FAILED, BuildLedger
from buildbot_kernel.steps import WORKER_COMMAND
from buildbot_kernel.target import BuildTarget
from buildbot_kernel.utctime import iso_utc
from buildbot_kernel.util import shown

SKIP_PROPERTY = "bbk_skip"


def not_skipped(step) -> bool:
    """doStepIf for every step after KernelFacts: an image that exists is never built again."""
    return not step.getProperty(SKIP_PROPERTY)


def parse_facts(stdout: str) -> dict:
    facts = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key.strip()] = value.strip()
    return facts


def unsafe_name_problem(facts: dict) -> str:
    """Why the kernel tree's own part of the image name (``make kernelversion`` and the ``localversion*``
    files Kbuild appends) cannot be an image name, naming the file to fix, or "".

    The name becomes a directory of the tree and part of staging paths, so a localversion file holding
    ``/../x`` or a space must stop the build here, before anything is written.
    """
    version = facts.get("kernelversion", "")
    problem = naming.image_name_problem(version + "x")  # "x": the version alone may end in '.'
    if problem:
        return f"make kernelversion printed {version!r}, which cannot start an image name: {problem}"
    files = [v.partition("\t") for k, v in sorted(facts.items()) if k.startswith("localversion.")]
    for fname, _, text in files:
        problem = naming.image_name_problem("x" + text) if text else ""
        if problem:
            return (f"the kernel tree's file {fname!r} adds {text!r} to the kernel release, which cannot be "
                    f"part of an image name ({problem}); remove {fname} from the branch or make it hold only "
                    "letters, digits and . _ + -")
    combined = facts.get("localversion_files", "")
    problem = naming.image_name_problem("x" + combined) if combined else ""
    if problem:
        names = ", ".join(f for f, _, _ in files) or "localversion*"
        return f"the kernel tree's localversion files ({names}) add {combined!r}: {problem}"
    return ""



def known_outcome(t: BuildTarget, name: str, sha: str) -> tuple[bool, dict | None]:
    """(is ``name`` a complete image of the branch, the ledger's record of ``sha``): disk reads, so the
    step calls this in a thread."""
    return (is_published(t.branch_dir / name),
            BuildLedger(t.ledger_path).get(t.repository, t.branch, sha, t.build_name))

class KernelFacts(buildstep.ShellMixin, buildstep.BuildStep):
    """Reads the checked-out commit and tree, computes the image name, and decides whether to build.

    The name is computed on the master by ``naming`` (one implementation of the contract) from facts the
    worker reports; Kbuild's own ``kernelrelease`` is compared with it after the build.
    """

    name = "kernel-facts"
    haltOnFailure = True

    def __init__(self, target: BuildTarget, **kwargs):
        self.target = target
        kwargs = self.setupShellMixin({"command": kbuild_commands.FACTS_SCRIPT, "workdir": "work",
                                       **WORKER_COMMAND, **kwargs})
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        env = dict(self.env or {})
        if self.target.build.cross_compile:
            env["CROSS_COMPILE"] = self.target.build.cross_compile
        cmd = yield self.makeRemoteShellCommand(collectStdout=True, env=env)
        yield self.runCommand(cmd)
        if cmd.didFail():
            self.descriptionDone = ["could not read the checked-out tree"]
            return FAILURE
        facts = parse_facts(cmd.stdout)
        missing = [k for k in ("kernelversion", "sha", "committer_ts") if not facts.get(k)]
        if missing == ["committer_ts"]:  # git's %ct prints nothing for a date before 1970
            return (yield self._commit_fails(facts, f"commit {facts['sha']} has no committer date git can print "
                                                    "(one before 1970?): its image cannot be named"))
        if missing:
            yield self.addCompleteLog("problem", f"the tree did not report: {', '.join(missing)}\n"
                                      "(is this a kernel tree? `make -s kernelversion` must work)\n")
            self.descriptionDone = [f"not a kernel tree: no {missing[0]}"]
            return FAILURE
        problem = unsafe_name_problem(facts)
        if problem:
            return (yield self._commit_fails(facts, problem))
        return (yield self._decide(facts))

    @defer.inlineCallbacks
    def _decide(self, facts: dict):
        t = self.target
        try:
            ts = int(facts["committer_ts"])
            name = naming.image_name(facts["kernelversion"], t.branch, facts["sha"], ts,
                                     at_release_tag=facts.get("at_tag") == "1",
                                     localversion_files=facts.get("localversion_files", ""))
        except ValueError as e:  # the commit's own data (a pushed commit may carry any date)
            return (yield self._commit_fails(
                facts, f"commit {facts['sha']} (committer date {shown(facts['committer_ts'])}) cannot be named: {e}"))
        jobs = t.build.jobs or int(facts.get("cpus") or 1)
        use_ccache = t.build.ccache and facts.get("ccache") == "1"
        commit_date = iso_utc(ts)
        props = {
            "image_name": name,
            "localversion": naming.config_localversion(t.branch, facts["sha"], ts),
            "commit_sha": facts["sha"],
            "commit_subject": facts.get("subject", ""),
            "commit_author": facts.get("author", ""),
            "commit_date": commit_date,
            "jobs": jobs,
            "use_ccache": use_ccache,
            "compiler": facts.get("compiler", ""),
            "build_started": time.time(),
            "incoming_dir": str(Path(t.images_root) / ".incoming" / f"{name}.{uuid.uuid4().hex[:8]}"),
        }
        for k, v in props.items():
            self.setProperty(k, v, self.name)
        forced = bool(self.getProperty("force_rebuild"))
        published, failed = yield threads.deferToThread(known_outcome, t, name, facts["sha"])
        reason = None
        if published:
            reason = f"already published as {name}"
        elif failed and failed.get("outcome") == FAILED and not forced:
            reason = f"failed before ({failed.get('time')}); force a rebuild to try again"
        yield self.addCompleteLog("facts", "".join(f"{k}={v}\n" for k, v in sorted({**facts, **props}.items())))
        if reason:
            self.setProperty(SKIP_PROPERTY, reason, self.name)
            self.descriptionDone = [f"{facts['sha'][:12]}: {reason}"]
            return SKIPPED
        self.descriptionDone = [name]
        return SUCCESS

    @defer.inlineCallbacks
    def _commit_fails(self, facts: dict, problem: str):
        """What the commit itself holds (its date, its localversion files) cannot make an image: it fails
        like a commit that does not compile.  With ``commit_sha`` set RecordOutcome records it as failed,
        so it is not built again until someone forces it (a commit id that is not one is never recorded)."""
        if is_sha(facts["sha"]):
            self.setProperty("commit_sha", facts["sha"], self.name)
        yield self.addCompleteLog("problem", problem + "\n")
        self.descriptionDone = [problem[:200]]
        return FAILURE


class _ProgressObserver(logobserver.LogLineObserver):
    def __init__(self, step: KbuildCompile):
        super().__init__()
        self.step = step

    def outLineReceived(self, line):
        self.step.lineReceived(line)

    errLineReceived = outLineReceived


class KbuildCompile(ShellCommand):
    """``make`` with a live object count in the UI and the first compiler error as the summary.

    An ``errors`` log is opened before ``stdio`` so that, in the UI, a failed build shows the compiler
    error first instead of 20,000 lines of CC output.
    """

    name = "compile"
    haltOnFailure = True

    def __init__(self, **kwargs):
        super().__init__(**{**WORKER_COMMAND, **kwargs})
        self.kbuild = KbuildProgress()
        self._errors_log = None
        self.addLogObserver("stdio", _ProgressObserver(self))

    def lineReceived(self, line: str):
        is_error = self.kbuild.feed(line)
        if is_error and self._errors_log is not None:
            self._errors_log.addStdout(line + "\n")
        if self.kbuild.objects % 25 == 1 or is_error:
            self.updateSummary()

    @defer.inlineCallbacks
    def run(self):
        self._errors_log = yield self.addLog("errors")
        cmd = yield self.makeRemoteShellCommand()
        yield self.runCommand(cmd)
        yield self._errors_log.finish()
        return cmd.results()

    def getCurrentSummary(self):
        return {"step": self.kbuild.summary(running=True)}

    def getResultSummary(self):
        if self.results not in (SUCCESS, SKIPPED) and self.kbuild.first_error:
            return {"step": f"failed: {self.kbuild.first_error}"[:200],
                    "build": f"compile error: {self.kbuild.first_error}"[:200]}
        if self.results == SKIPPED:
            return super().getResultSummary()
        return {"step": self.kbuild.summary(running=False)}


class CheckKernelRelease(buildstep.ShellMixin, buildstep.BuildStep):
    """Kbuild must agree with the naming contract, else the image would lie to ``uname -r``."""

    name = "check-kernelrelease"
    haltOnFailure = True

    def __init__(self, **kwargs):
        kwargs = self.setupShellMixin({"workdir": "work", **WORKER_COMMAND, **kwargs})
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        cmd = yield self.makeRemoteShellCommand(collectStdout=True)
        yield self.runCommand(cmd)
        if cmd.didFail():
            return FAILURE
        got = cmd.stdout.strip().splitlines()[-1] if cmd.stdout.strip() else ""
        want = self.getProperty("image_name")
        if got != want:
            msg = (f"make kernelrelease printed {shown(got, 80)} but the image name is {want!r}; "
                   "check localversion files, CONFIG_LOCALVERSION_AUTO and the LOCALVERSION variable")
            yield self.addCompleteLog("mismatch", msg + "\n")
            self.descriptionDone = [f"kernelrelease {shown(got, 80)} != image name {want!r}"]
            return FAILURE
        self.descriptionDone = [f"kernelrelease = {got}"]
        return SUCCESS
