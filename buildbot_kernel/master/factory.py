"""The steps of a branch build, in order (README.md, "What runs")."""

from __future__ import annotations

from buildbot.plugins import steps, util

from buildbot_kernel import kbuild_commands
from buildbot_kernel.bisect.mirror import mirror_path
from buildbot_kernel.settings import Settings, is_config_file, resolve
from buildbot_kernel.steps import WORKER_COMMAND
from buildbot_kernel.steps.checkout import UpdateTree
from buildbot_kernel.steps.image_test import TriggerImageTests
from buildbot_kernel.steps.kernel import CheckKernelRelease, KbuildCompile, KernelFacts, not_skipped
from buildbot_kernel.steps.publish import PublishImage, RecordOutcome, UploadImage
from buildbot_kernel.steps.record import AttachBuildRecord
from buildbot_kernel.target import BuildTarget
from buildbot_kernel.util import identifier

NO_LOCALVERSION = {"LOCALVERSION": None}  # unset: setting it, even empty, drops the "+" of the name


def tree_lock(builder: str):
    """One build at a time in a branch builder's work tree: its branch builds and its bisect builds
    share the tree (one kernel checkout and object directory per branch on each worker)."""
    return util.MasterLock(f"tree-{builder}").access("exclusive")


def _skipped(results, step):
    return not not_skipped(step)


def kernel_build_factory(settings: Settings, target: BuildTarget) -> util.BuildFactory:
    build = target.build
    full_config = is_config_file(build.config)
    downloads = []
    base_config = resolve(settings, build.config) if full_config else None
    if base_config is not None:
        downloads.append((base_config, "fragments/base.config"))
    fragments = [resolve(settings, frag) for frag in build.fragments]
    for i, frag in enumerate(fragments):
        downloads.append((frag, f"fragments/{i}.config"))
    common = {"workdir": "work", "doStepIf": not_skipped, "hideStepIf": _skipped}
    shell = {**common, **WORKER_COMMAND}

    f = util.BuildFactory()
    # the worker's one store of this repository's history, which the checkout borrows (worker_store.py),
    # and the checkout, in one command on the worker
    f.addStep(UpdateTree(target, str(mirror_path(target.state_dir, target.repository))))
    f.addStep(KernelFacts(target))
    if downloads:  # configure reads only the files downloaded now; without any, nothing reads fragments/
        f.addStep(steps.ShellCommand(name="clean-fragments", command=["rm", "-rf", "fragments"], **shell))
    for src, dest in downloads:
        f.addStep(steps.FileDownload(name=identifier(f"download-{dest}"), mastersrc=str(src), workerdest=dest,
                                     haltOnFailure=True, **common))
    f.addStep(steps.ShellCommand(
        name="configure", haltOnFailure=True, env=NO_LOCALVERSION, **shell,
        command=util.Transform(lambda lv: kbuild_commands.configure_script(
            build, lv, len(build.fragments), full_config), util.Property("localversion"))))
    f.addStep(KbuildCompile(
        # paths under the builder's directory are hashed relative (../src/...), so every branch builder
        # and every worker directory shares ccache hits: drm-tip's first build reuses drm-intel-next's work
        env={**NO_LOCALVERSION, "CCACHE_BASEDIR": util.Property("builddir")}, timeout=build.timeout, **shell,
        command=util.Transform(lambda jobs, ccache, ts: kbuild_commands.compile_command(build, jobs, ccache, ts),
                               util.Property("jobs"), util.Property("use_ccache"),
                               util.Property("commit_date"))))
    f.addStep(CheckKernelRelease(command=kbuild_commands.kernelrelease_command(build), env=NO_LOCALVERSION,
                                 **{k: v for k, v in shell.items() if k != "workdir"}))
    f.addStep(steps.ShellCommand(
        name="package", haltOnFailure=True, env=NO_LOCALVERSION, **shell,
        command=util.Transform(lambda name: kbuild_commands.package_script(build, name),
                               util.Property("image_name"))))
    f.addStep(UploadImage(name="upload", workersrc="pkg", masterdest=util.Property("incoming_dir"),
                          haltOnFailure=True, **common))
    f.addStep(AttachBuildRecord(target, base_config, fragments, doStepIf=not_skipped, hideStepIf=_skipped))
    f.addStep(PublishImage(target, doStepIf=not_skipped, hideStepIf=_skipped))
    f.addStep(RecordOutcome(target))
    watching = [t.name for t in settings.tests if target.branch in t.branches]
    if watching:  # README.md "Regression watch"
        f.addStep(TriggerImageTests(target, watching))
    return f
