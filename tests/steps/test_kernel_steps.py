"""Step tests (Buildbot's TestBuildStepMixin): the custom steps against scripted worker answers."""

from __future__ import annotations

import shutil
import tempfile

from buildbot.process.results import FAILURE, SKIPPED, SUCCESS
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import ExpectShell, TestBuildStepMixin
from twisted.trial import unittest

from buildbot_kernel import kbuild_commands
from buildbot_kernel.imagetree import package
from buildbot_kernel.imagetree.testing import image_fields, write_payload
from buildbot_kernel.ledger import FAILED, BuildLedger
from buildbot_kernel.settings import Build
from buildbot_kernel.steps.kernel import CheckKernelRelease, KbuildCompile, KernelFacts
from buildbot_kernel.target import BuildTarget

SHA = "18097b4c2a6d93e1f3c7a4bbd0e6f9a1b2c3d4e5"
FACTS = f"""kernelversion=3.10.0-rc7
localversion_files=
at_tag=0
sha={SHA}
committer_ts=1374190200
author=Dev <dev@example.org>
subject=drm/i915: fix the thing
cpus=8
compiler=gcc (Debian 12.2.0-14) 12.2.0
ccache=1
"""
NAME = "3.10.0-rc7-drm-intel-fixes_18097b_20130718_+"


class StepCase(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    def setUp(self):
        self.setup_test_reactor()
        return self.setup_test_build_step()

    def target(self, **build):
        root = tempfile.mkdtemp(prefix="bbk-steptest-")  # trial's mktemp() would write into the checkout
        self.addCleanup(shutil.rmtree, root, True)
        return BuildTarget(repository="drm-intel", url="https://example.org/i915.git", branch="drm-intel-fixes",
                           build=Build(name="x86_64", arch="x86_64", config="defconfig", **build),
                           images_root=root + "/images", state_dir=root + "/state")


class TestKernelFacts(StepCase):
    def expect_facts(self, stdout=FACTS):
        self.expect_commands(ExpectShell(workdir="work", log_environ=False, command=kbuild_commands.FACTS_SCRIPT)
                             .stdout(stdout).exit(0))

    def test_computes_name_and_build_properties(self):
        self.setup_step(KernelFacts(self.target()))
        self.expect_facts()
        self.expect_outcome(result=SUCCESS, state_string=NAME)
        self.expect_property("image_name", NAME)
        self.expect_property("localversion", "-drm-intel-fixes_18097b_20130718_")
        self.expect_property("commit_date", "2013-07-18T23:30:00Z")
        self.expect_property("jobs", 8)
        self.expect_property("use_ccache", True)
        return self.run_step()

    def test_configured_jobs_and_ccache_off_win(self):
        self.setup_step(KernelFacts(self.target(jobs=3, ccache=False)))
        self.expect_facts()
        self.expect_outcome(result=SUCCESS)
        self.expect_property("jobs", 3)
        self.expect_property("use_ccache", False)
        return self.run_step()

    def test_already_published_image_is_skipped(self):
        t = self.target()
        stage = package.staging_dir(t.images_root)  # a complete image of that name (the completeness rule)
        write_payload(stage)
        package.write_manifest(stage, {**image_fields(t.branch, 1, sha=SHA), "name": NAME, "kernelrelease": NAME})
        package.publish(stage, t.images_root, t.branch, NAME)
        self.setup_step(KernelFacts(t))
        self.expect_facts()
        self.expect_outcome(result=SKIPPED, state_string=f"18097b4c2a6d: already published as {NAME} (skipped)")
        self.expect_property("bbk_skip", f"already published as {NAME}")
        return self.run_step()

    def test_an_image_still_being_copied_in_is_not_published(self):
        t = self.target()
        (t.branch_dir / NAME).mkdir(parents=True)
        (t.branch_dir / NAME / "metadata.json").write_text("{}")
        self.setup_step(KernelFacts(t))
        self.expect_facts()
        self.expect_outcome(result=SUCCESS, state_string=NAME)
        return self.run_step()

    def test_recorded_failure_is_skipped_unless_forced(self):
        t = self.target()
        BuildLedger(t.ledger_path).record("drm-intel", "drm-intel-fixes", SHA, "x86_64", FAILED)
        self.setup_step(KernelFacts(t))
        self.expect_facts()
        self.expect_outcome(result=SKIPPED)
        return self.run_step()

    def test_forced_rebuild_of_a_failure_runs(self):
        t = self.target()
        BuildLedger(t.ledger_path).record("drm-intel", "drm-intel-fixes", SHA, "x86_64", FAILED)
        self.setup_step(KernelFacts(t))
        self.build.setProperty("force_rebuild", True, "test")
        self.expect_facts()
        self.expect_outcome(result=SUCCESS, state_string=NAME)
        return self.run_step()

    def test_a_localversion_file_that_would_make_an_unsafe_name_fails_naming_it(self):
        t = self.target()
        self.setup_step(KernelFacts(t))
        facts = FACTS.replace("localversion_files=\n", "localversion_files=-rt1/../../../x\n"
                              "localversion.1=localversion-rt\t-rt1\nlocalversion.2=localversion-zz\t/../../../x\n")
        self.expect_facts(stdout=facts)
        self.expect_outcome(result=FAILURE)
        self.expect_log_file("problem", "the kernel tree's file 'localversion-zz' adds '/../../../x' to the kernel "
                             "release, which cannot be part of an image name (image name 'x/../../../x' holds a "
                             "path separator; expected one path component); remove localversion-zz from the "
                             "branch or make it hold only letters, digits and . _ + -\n")
        d = self.run_step()
        d.addCallback(lambda _: self.assertFalse((t.branch_dir.parent / ".incoming").exists()))
        return d

    def test_a_safe_localversion_file_is_part_of_the_name(self):
        self.setup_step(KernelFacts(self.target()))
        self.expect_facts(stdout=FACTS.replace("localversion_files=\n", "localversion_files=-rt5\n"
                                               "localversion.1=localversion-rt\t-rt5\n"))
        self.expect_outcome(result=SUCCESS, state_string="3.10.0-rc7-rt5-drm-intel-fixes_18097b_20130718_+")
        return self.run_step()

    def test_not_a_kernel_tree_fails_clearly(self):
        self.setup_step(KernelFacts(self.target()))
        self.expect_facts(stdout="kernelversion=\nsha=abc\n")
        self.expect_outcome(result=FAILURE, state_string="not a kernel tree: no kernelversion (failure)")
        return self.run_step()


KBUILD_OK = "".join(f"  CC      drivers/gpu/f{i}.o\n" for i in range(30)) + "  LD      vmlinux\n"
KBUILD_FAIL = """  CC      init/main.o
/home/w/drm-intel-fixes/work/src/drivers/gpu/i915.c: In function 'i915_init':
/home/w/drm-intel-fixes/work/src/drivers/gpu/i915.c:1:30: error: 'oops' undeclared (first use in this function)
make[2]: *** [scripts/Makefile.build:250: drivers/gpu/i915.o] Error 1
make: *** [Makefile:2012: .] Error 2
"""


class TestKbuildCompile(StepCase):
    def test_counts_objects(self):
        self.setup_step(KbuildCompile(command=["make"], workdir="work"))
        self.expect_commands(ExpectShell(workdir="work", log_environ=False, command=["make"]).stdout(KBUILD_OK).exit(0))
        self.expect_outcome(result=SUCCESS, state_string="compiled 30 objects")
        return self.run_step()

    def test_first_compiler_error_is_the_summary_and_the_errors_log(self):
        self.setup_step(KbuildCompile(command=["make"], workdir="work"))
        self.expect_commands(ExpectShell(workdir="work", log_environ=False, command=["make"])
                             .stdout(KBUILD_FAIL).exit(2))
        self.expect_outcome(result=FAILURE, state_string="failed: drivers/gpu/i915.c:1:30: error: 'oops' undeclared "
                                                         "(first use in this function)")
        self.expect_log_file("errors", "/home/w/drm-intel-fixes/work/src/drivers/gpu/i915.c:1:30: error: 'oops' "
                             "undeclared (first use in this function)\n"
                             "make[2]: *** [scripts/Makefile.build:250: drivers/gpu/i915.o] Error 1\n"
                             "make: *** [Makefile:2012: .] Error 2\n")
        return self.run_step()


class TestCheckKernelRelease(StepCase):
    def step(self, got):
        self.setup_step(CheckKernelRelease(command=["make", "-s", "kernelrelease"]))
        self.build.setProperty("image_name", NAME, "test")
        self.expect_commands(ExpectShell(workdir="work", log_environ=False, command=["make", "-s", "kernelrelease"])
                             .stdout(got + "\n").exit(0))

    def test_match(self):
        self.step(NAME)
        self.expect_outcome(result=SUCCESS, state_string=f"kernelrelease = {NAME}")
        return self.run_step()

    def test_a_huge_kernelrelease_is_shown_cut(self):
        """A commit's Makefile decides what ``make kernelrelease`` prints: a 100k-character line became the
        step summary every reader of builds loads.  The summary shows its start and its length."""
        got = "6.1.0-" + "x" * 100_000
        self.step(got)
        self.expect_outcome(result=FAILURE, state_string=f"kernelrelease {got[:80]!r}... ({len(got)} characters) "
                                                         f"!= image name {NAME!r} (failure)")
        return self.run_step()

    def test_mismatch_fails_and_says_both_strings(self):
        self.step(NAME.rstrip("+"))
        self.expect_outcome(result=FAILURE, state_string=f"kernelrelease {NAME.rstrip('+')!r} != image name "
                                                         f"{NAME!r} (failure)")
        return self.run_step()
