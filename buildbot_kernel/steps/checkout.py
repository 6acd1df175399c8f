"""The branch build's first step: the worker's store and the kernel checkout in one command.

One command, not Buildbot's Git step after a store step: each remote command is a round trip to the
master with its own log writes in the master's database, and the Git step runs seven of them per build
(``git --version``, a patch marker, ``listdir``, ``cat-file``, two checkouts, ``rev-parse``). On a master
serving several workers those round trips queue behind each other; the script itself
(:data:`buildbot_kernel.worker_store.CHECKOUT_SCRIPT`) does the same git work in a fraction of a second.
"""

from __future__ import annotations

from buildbot.process import buildstep
from buildbot.process.results import FAILURE, SUCCESS, WARNINGS
from twisted.internet import defer

from buildbot_kernel import worker_store
from buildbot_kernel.imagetree.branchorder import is_sha
from buildbot_kernel.steps import WORKER_COMMAND
from buildbot_kernel.target import BuildTarget


def requested(sourcestamp, default_branch: str) -> tuple[str, str | None]:
    """(branch, revision) a build asks for, as Buildbot's source steps read its source stamp: the
    stamp's revision, else its newest change's, else None (the branch's head)."""
    if sourcestamp is None:
        return default_branch, None
    revision = sourcestamp.revision
    if not revision and sourcestamp.changes:
        revision = sourcestamp.changes[-1].revision
    return sourcestamp.branch or default_branch, revision or None


def parse_checkout(stdout: str) -> dict[str, str]:
    """The ``key=value`` lines the checkout script prints (``store``, ``got_revision``)."""
    out = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("store", "got_revision"):
            out[key] = value.strip()
    return out


class UpdateTree(buildstep.ShellMixin, buildstep.BuildStep):
    """Checks out the build's commit in ``work/src``, borrowing the worker's store (README.md "What runs").

    A store that cannot be updated is a warning (the checkout fetches on its own); a checkout that fails
    stops the build."""

    name = "update-tree"
    description = ["checking out"]
    haltOnFailure = True

    def __init__(self, target: BuildTarget, master_store: str, **kwargs):
        self.target, self.master_store = target, master_store
        kwargs = self.setupShellMixin({"workdir": "work", "timeout": 3600, "sigtermTime": 1, **WORKER_COMMAND,
                                       **kwargs})
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        t = self.target
        branch, revision = requested(self.build.getSourceStamp(""), t.branch)
        cmd = yield self.makeRemoteShellCommand(
            collectStdout=True,
            command=worker_store.checkout_command(t.repository, t.url, branch, self.master_store, revision))
        yield self.runCommand(cmd)
        wanted = revision[:12] if revision else f"the head of {branch}"
        out = parse_checkout(cmd.stdout)
        got = out.get("got_revision", "")
        if cmd.didFail() or not is_sha(got):
            self.descriptionDone = [f"could not check out {wanted} (git's message: stdio log)"]
            return FAILURE
        self.setProperty("got_revision", got, self.name)
        if not out.get("store"):
            self.descriptionDone = [f"checked out {got[:12]}; the worker's store was not updated (stdio log)"]
            return WARNINGS
        self.descriptionDone = [f"checked out {got[:12]}"]
        return SUCCESS
