"""The "heads" builder's step: ask each remote for its branch heads and build the ones without images."""

from __future__ import annotations

from buildbot.process import buildstep
from buildbot.process.results import FAILURE, SUCCESS, WARNINGS
from twisted.internet import defer, threads

from buildbot_kernel import buildbot_adapter as bb
from buildbot_kernel import gitrepo, heads
from buildbot_kernel.target import BuildTarget
from buildbot_kernel.util import identifier


class ReconcileHeads(buildstep.BuildStep):
    """One step per repository.  A remote that cannot be reached fails this step with git's message,
    which is how a poll problem becomes visible in the UI instead of only in twistd.log.  git runs in
    the master's environment (SSH agent, keys, GIT_SSH_COMMAND: :func:`buildbot_kernel.gitrepo.git_env`),
    so an SSH remote the operator can reach from a shell is reachable here too."""

    haltOnFailure = False
    flunkOnFailure = True

    def __init__(self, url: str, targets: list[tuple[BuildTarget, str, str]], **kwargs):
        # targets: (target, builder name, scheduler name) for each branch of this repository
        self.url = url
        self.targets = targets
        kwargs.setdefault("name", identifier(f"heads-{targets[0][0].repository}"))
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        branches = [t.branch for t, _, _ in self.targets]
        refs = [f"refs/heads/{b}" for b in branches]
        log = yield self.addLog("heads")
        yield log.addHeader(f"git ls-remote {self.url} {' '.join(refs)}\n")
        try:  # off the reactor: the remote may take seconds to answer (or minutes to time out)
            out = yield threads.deferToThread(gitrepo.ls_remote, self.url, refs)
        except gitrepo.GitError as e:
            yield log.addStderr(e.stderr.rstrip("\n") + "\n")
            self.descriptionDone = [f"cannot reach {self.url}: {e.reason}"[:200]]
            return FAILURE
        yield log.addStdout(out)
        found = heads.parse_ls_remote(out)
        scheduled, missing = [], heads.missing_branches([t for t, _, _ in self.targets], found)
        for target, builder, scheduler_name in self.targets:
            sha = found.get(target.branch)
            if sha is None:
                continue
            try:  # the index's head mark, order and latest (a failure costs only their freshness)
                yield threads.deferToThread(heads.record_head, target, sha)
            except Exception as e:  # noqa: BLE001 - reported in the log, the check goes on
                yield log.addStderr(f"{target.branch}: cannot record the head: {e}\n")
            reason = yield threads.deferToThread(heads.needs_build, target, sha)  # ledger and tree reads
            if reason is None:
                yield log.addStdout(f"{target.branch}: {sha[:12]} already built\n")
                continue
            if (yield bb.revision_queued(self.master, builder, sha)):
                yield log.addStdout(f"{target.branch}: {sha[:12]} already queued\n")
                continue
            yield bb.scheduler(self.master, scheduler_name).addBuildsetForSourceStamps(
                sourcestamps=[{"codebase": "", "repository": target.url, "branch": target.branch,
                               "revision": sha, "project": target.repository}],
                reason=reason, builderNames=[builder])
            scheduled.append(f"{target.branch}@{sha[:8]}")
            yield log.addStdout(f"{target.branch}: {reason} -> build scheduled\n")
        tree = bb.named_service(self.master, "image-tree")
        if tree is not None:  # heads.json changed: head marks, order and latest follow the remote
            yield tree.regenerate()
        summary = f"scheduled {', '.join(scheduled)}" if scheduled else "all heads have images"
        if missing:
            yield log.addStderr(f"branches not on the remote: {', '.join(missing)}\n")
            self.descriptionDone = [f"{summary}; missing on remote: {', '.join(missing)}"]
            return WARNINGS
        self.descriptionDone = [summary]
        return SUCCESS
