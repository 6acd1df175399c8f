"""Master-side steps: publish an uploaded package atomically, and remember what failed.

A full image disk is the host's failure, not the commit's: the build fails and says so, but the commit is
not remembered as failed, so the next heads check (periodic, at a master start, or "Check branch heads
now") builds it again once there is space (README.md, "When things fail").
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

from buildbot.process import buildstep
from buildbot.process.results import FAILURE, SUCCESS, WARNINGS
from buildbot.steps.transfer import DirectoryUpload
from twisted.internet import defer, threads
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from buildbot_kernel import formats, heads, reproducer
from buildbot_kernel.buildbot_adapter import named_service
from buildbot_kernel.digest import sha256_file
from buildbot_kernel.imagetree import package, reserved
from buildbot_kernel.imagetree.modes import WORLD_READABLE, Modes
from buildbot_kernel.ledger import FAILED, PUBLISHED, BuildLedger
from buildbot_kernel.naming import component_problem
from buildbot_kernel.steps.kernel import SKIP_PROPERTY
from buildbot_kernel.steps.record import BUILD_LOG, REPRODUCER_PROPERTY
from buildbot_kernel.target import BuildTarget
from buildbot_kernel.utctime import iso_utc

WORKER_SUMS = ".worker.sha256"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
IMAGE_TREE_SERVICE = "image-tree"
ON_DEMAND_PROPERTY = "on_demand"  # set by a bisect's trigger: this build is for the bisect, not the branch
HOST_FAILURE_PROPERTY = "bbk_host_failure"  # why the build failed through no fault of the commit


def check_transfer(incoming: Path) -> list[str]:
    """Compare what arrived with the checksums the worker computed before the upload."""
    sums = incoming / WORKER_SUMS
    if not sums.is_file():
        return [f"{WORKER_SUMS} missing: the upload is incomplete"]
    problems = []
    for line in sums.read_text().splitlines():
        digest, _, fname = line.partition("  ")
        f = incoming / fname
        if component_problem(fname, "file name"):
            # the worker's word: "../../state/farm/keys/vm1.key" must not make the master read that file
            problems.append(f"{fname[:80]!r}: not a file name of the upload")
        elif not f.is_file():
            problems.append(f"{fname}: listed by the worker but not uploaded")
        elif sha256_file(f) != digest:
            problems.append(f"{fname}: sha256 differs from the worker's (corrupted in transfer)")
    return problems


def unexpected_entries(incoming: Path, packages) -> list[str]:
    """Entries of the upload that no package format of the build makes, besides the master's own build
    log and reproducer.  The tree is served to browsers on the image server's origin, where an
    ``index.html`` that a commit's Makefile drops into ``pkg/`` during ``modules_install`` would be a page
    (with scripts) of that host; only the declared files are published."""
    fmts = formats.selected(packages)
    own = {BUILD_LOG, reproducer.FILE}
    problems = []
    for e in sorted(os.scandir(incoming), key=lambda e: e.name):
        regular = e.is_file(follow_symlinks=False)
        if regular and (e.name in own or any(f.owns(e.name) for f in fmts)):
            continue
        what = "file" if regular else "directory" if e.is_dir(follow_symlinks=False) else "entry"
        problems.append(f"{e.name!r}: a {what} no package format of this build makes "
                        f"({', '.join(f.name for f in fmts)}: {' '.join(p for f in fmts for p in f.files)}); "
                        "a kernel build must not add files to pkg/")
    return problems


def publish_package(target: BuildTarget, incoming: Path, fields: dict, modes: Modes = WORLD_READABLE) -> Path:
    """Verify the transfer, write metadata.json + SHA256SUMS, and rename into the tree (in a thread).
    The upload keeps the worker's file modes (often 0600); ``package.publish`` applies ``modes``."""
    problems = check_transfer(incoming)
    if problems:
        raise package.CorruptImage(problems)
    (incoming / WORKER_SUMS).unlink()
    problems = unexpected_entries(incoming, target.build.packages)
    if problems:
        raise package.CorruptImage(problems)
    package.write_manifest(incoming, fields)
    return package.publish(incoming, target.images_root, target.branch, fields["name"], modes)


def publish_held(target: BuildTarget, incoming: Path, fields: dict, modes: Modes = WORLD_READABLE) -> Path:
    """:func:`publish_package` through ``.incoming`` held open (:func:`package.held_staging`)."""
    with package.held_staging(incoming) as staging:
        return publish_package(target, staging, fields, modes)


@defer.inlineCallbacks
def host_failure(step: buildstep.BuildStep, msg: str, problems: str):
    """The host failed, not the commit: said, and the commit not remembered as failed (RecordOutcome),
    so the next heads check builds it again."""
    step.setProperty(HOST_FAILURE_PROPERTY, msg, step.name)
    yield step.addCompleteLog("problems", problems)
    step.descriptionDone = [msg]
    return FAILURE


class UploadImage(DirectoryUpload):
    """Buildbot's DirectoryUpload, except that a stop lets the transfer end instead of cutting it.

    Cut as it starts (a stopped build or bisect, a master shutting down), the worker has sent no archive
    yet and the master fails to unpack an empty one; the worker then cannot send that error back with the
    command's end (it fails to serialize it), so the step, its build and a clean master shutdown wait
    until the worker disconnects. Seen in the test suite, a bisect stopped by a master shutdown while its
    on-demand build began its upload. An upload of an image takes seconds; the build stops at the end of
    it, and what arrived is never published (the next steps do not run). A lost worker still ends it at
    once, as Buildbot does."""

    @defer.inlineCallbacks
    def run(self):
        """Only into a real ``.incoming``, held open for the whole transfer (Buildbot unpacks by path): one
        that is, or becomes, a symlink would take the upload out of the tree."""
        held = contextlib.ExitStack()
        try:
            dest = yield threads.deferToThread(held.enter_context,
                                               package.held_staging(os.path.expanduser(self.masterdest)))
        except reserved.RefusedEntry as e:
            return (yield host_failure(self, f"not uploaded: {e.summary}", f"{e}\n"))
        with held:
            self.masterdest = str(dest)
            return (yield super().run())

    @defer.inlineCallbacks
    def interrupt(self, reason):
        if isinstance(reason, Failure) and reason.check(ConnectionLost):
            yield super().interrupt(reason)
            return
        yield self.addCompleteLog("interrupt", f"{reason}\n(the upload runs to its end; the build stops after it)")


class PublishImage(buildstep.BuildStep):
    name = "publish"
    haltOnFailure = True

    def __init__(self, target: BuildTarget, **kwargs):
        self.target = target
        super().__init__(**kwargs)

    def _fields(self) -> dict:
        t, p = self.target, self.getProperty
        started = p("build_started")
        build_seconds = round(time.time() - started, 1) if started else None
        return {
            "name": p("image_name"), "kernelrelease": p("image_name"),
            "repository": t.repository, "url": t.url, "branch": t.branch,
            "sha": p("commit_sha"), "subject": p("commit_subject"), "author": p("commit_author"),
            "commit_date": p("commit_date"),
            "build_date": iso_utc(),
            "build": t.build_name, "arch": t.build.arch, "compiler": p("compiler"),
            "config": t.build.config, "fragments": list(t.build.fragments),
            "build_seconds": build_seconds, "builder": self.build.builder.name,
            "buildnumber": p("buildnumber"),
            # never the branch's ``latest`` unless it is the head (docs/index-format.md)
            "on_demand": bool(p(ON_DEMAND_PROPERTY)),
            # the formats built, so the completeness rule checks their files (buildbot_kernel/formats/)
            "packages": [f.name for f in formats.selected(t.build.packages)],
            **({"reproducer": p(REPRODUCER_PROPERTY)} if p(REPRODUCER_PROPERTY) else {}),
        }

    @defer.inlineCallbacks
    def run(self):
        incoming = Path(self.getProperty("incoming_dir"))
        fields = self._fields()
        tree = named_service(self.master, IMAGE_TREE_SERVICE)
        modes = tree.modes if tree is not None else WORLD_READABLE
        try:
            path = yield threads.deferToThread(publish_held, self.target, incoming, fields, modes)
        except package.ImageExists:
            self.descriptionDone = [f"{fields['name']} was already published"]
            yield threads.deferToThread(package.remove_staging, incoming)
            return SUCCESS
        except package.CorruptImage as e:
            yield self.addCompleteLog("problems", "\n".join(e.problems) + "\n")
            self.descriptionDone = [f"not published: {e.problems[0]}"]
            return FAILURE
        except reserved.RefusedEntry as e:  # the branch directory is a symlink (README.md, "Images")
            return (yield host_failure(self, f"not published: {e.summary}", f"{e}\n"))
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            # nothing was renamed into the tree; the upload goes too, so no half image stays in .incoming
            yield threads.deferToThread(package.remove_staging, incoming)
            msg = f"no space left on the image disk: {self.target.images_root}"
            return (yield host_failure(self, msg, f"{msg}\n{e}\nfree space there (retention: "
                                             "images.keep_per_branch / images.max_bytes) and rebuild\n"))
        yield threads.deferToThread(  # an fsynced append
            BuildLedger(self.target.ledger_path).record, self.target.repository, self.target.branch,
            fields["sha"], self.target.build_name, PUBLISHED, image=fields["name"])
        yield self._record_head()
        self.setProperty("published_image", fields["name"], "publish")  # image tests start from it
        result = SUCCESS
        self.descriptionDone = [f"published {fields['name']}"]
        if tree is not None:
            try:
                yield tree.published(path)
            except reserved.RefusedEntry as e:  # .state is a symlink: no index lock, no regeneration
                yield self.addCompleteLog("index", f"the image is published, but the index was not regenerated:"
                                          f"\n{e}\n")
                self.descriptionDone = [f"published {fields['name']}; the index was not regenerated"]
                result = WARNINGS
        base = getattr(tree, "base_url", "") if tree is not None else ""
        url = f"{base.rstrip('/')}/{path.parent.name}/{path.name}/" if base else ""
        if url:
            self.addURL(fields["name"], url)
        return result


    @defer.inlineCallbacks
    def _record_head(self):
        """The branch's head and its images' order, before the index is regenerated: this image may be
        the head's, or (built for a bisect) somewhere in the history.  A failure here (remote gone) only
        costs the order's freshness, never the publish."""
        try:
            state = yield threads.deferToThread(heads.record_head, self.target)
        except Exception as e:  # noqa: BLE001 - logged; the image is published either way
            yield self.addCompleteLog("heads", f"cannot update the branch's head and order: {e}\n")
            return
        if state is not None:
            known = "unknown" if state.history is None else f"{len(state.history)} image commits on it"
            yield self.addCompleteLog("heads", f"{self.target.branch} head {state.head} (history: {known})\n")


class RecordOutcome(buildstep.BuildStep):
    """Runs always: a failed build is remembered (not rebuilt on restart) and its upload cleaned away."""

    name = "record-outcome"
    alwaysRun = True
    hideStepIf = staticmethod(lambda results, step: results == SUCCESS)

    def __init__(self, target: BuildTarget, **kwargs):
        self.target = target
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        incoming = self.getProperty("incoming_dir")
        if incoming:  # disk work, all of it in a thread
            yield threads.deferToThread(package.remove_staging, incoming)
        sha = self.getProperty("commit_sha")
        host_failed = self.getProperty(HOST_FAILURE_PROPERTY)
        if self.build.results == FAILURE and sha and host_failed:
            self.descriptionDone = ["not recorded as failed: the host failed, not the commit"]
        elif self.build.results == FAILURE and sha and not self.getProperty(SKIP_PROPERTY):
            yield threads.deferToThread(
                BuildLedger(self.target.ledger_path).record, self.target.repository, self.target.branch, sha,
                self.target.build_name, FAILED, buildnumber=self.getProperty("buildnumber"))
            self.descriptionDone = ["recorded as failed"]
        return SUCCESS
