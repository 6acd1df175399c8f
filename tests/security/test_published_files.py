"""What a worker uploads is checked before it is published (README "Images"): only the files the build's
package formats declare, named by the worker's checksum list as files of the upload only.  The publish
step runs on a staged upload as the upload step leaves it, with what a commit's Makefile could add."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from buildbot.process.results import FAILURE, SUCCESS
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import TestBuildStepMixin
from twisted.trial import unittest as trial

from buildbot_kernel.imagetree.testing import image_fields, write_payload
from buildbot_kernel.settings import Build
from buildbot_kernel.steps.publish import WORKER_SUMS, PublishImage, check_transfer
from buildbot_kernel.steps.record import BUILD_LOG
from buildbot_kernel.target import BuildTarget


def publish_step(case, extra) -> tuple[Path, dict, Path]:
    """Set up ``case`` (a TestBuildStepMixin) with a publish step of an upload staged as the upload step
    leaves it, ``extra(incoming)`` adding to it: (tree root, the image's fields, the staged upload)."""
    tmp = Path(tempfile.mkdtemp(prefix="bbk-publish-"))
    case.addCleanup(shutil.rmtree, tmp, True)
    root = tmp / "images"
    root.mkdir()
    fields = image_fields("drm-tip", 1)
    incoming = root / ".incoming" / f"{fields['name']}.0badf00d"  # as the upload step leaves it
    incoming.mkdir(parents=True)
    write_payload(incoming, seed="1")
    (incoming / BUILD_LOG).write_bytes(b"log")
    extra(incoming)
    names = sorted(p.name for p in incoming.iterdir() if p.is_file())
    sums = subprocess.run(["sha256sum", "--", *names], cwd=incoming, capture_output=True, text=True,
                          check=True).stdout
    (incoming / WORKER_SUMS).write_text(sums)
    # a repository that does not exist: the publish's head check fails at once, offline
    target = BuildTarget(repository="fixture", url=str(tmp / "absent.git"), branch="drm-tip",
                         build=Build(name="x86_64", arch="x86_64", config="defconfig"),
                         images_root=str(root), state_dir=str(tmp / "state"))
    case.setup_step(PublishImage(target))
    for key, value in (("image_name", fields["name"]), ("commit_sha", fields["sha"]),
                       ("commit_subject", fields["subject"]), ("commit_author", fields["author"]),
                       ("commit_date", fields["commit_date"]), ("incoming_dir", str(incoming))):
        case.build.setProperty(key, value, "test")
    return root, fields, incoming


class TestUndeclaredFilesAreNotPublished(TestBuildStepMixin, TestReactorMixin, trial.TestCase):
    """The hole: every file of the upload was published, and a kernel commit's Makefile runs during
    ``modules_install`` in the package step, after ``pkg/`` is made: an ``index.html`` (or ``x.html``, or a
    directory of them) it drops there became a page of the image server, the directory's own page even.
    The image server shares its host name with the web UI, whose session cookie is not HttpOnly and goes
    to every port of the host: a script there could read an admin's session.  Only the files the build's
    package formats declare (and the master's build log and reproducer) are published now."""

    def setUp(self):
        self.setup_test_reactor()
        return self.setup_test_build_step()

    def _refused(self, extra, says: str):
        root, fields, _ = publish_step(self, extra)
        self.expect_outcome(result=FAILURE)
        d = self.run_step()

        def check(_):
            self.assertFalse((root / "drm-tip" / fields["name"]).exists())
            self.assertIn(says, self.get_nth_step(0).logs["problems"].stdout)
        return d.addCallback(check)

    def test_an_index_html_is_not_published(self):
        return self._refused(lambda d: (d / "index.html").write_text("<script>alert(1)</script>"),
                             "'index.html': a file no package format of this build makes")

    def test_a_directory_is_not_published(self):
        def extra(d):
            (d / "www").mkdir()
            (d / "www" / "index.html").write_text("<script>alert(1)</script>")
        return self._refused(extra, "'www': a directory no package format")

    def test_the_declared_files_are(self):
        root, fields, _ = publish_step(self, lambda d: None)
        self.expect_outcome(result=SUCCESS)
        d = self.run_step()
        return d.addCallback(lambda _: self.assertTrue((root / "drm-tip" / fields["name"] / "vmlinuz").is_file()))


def test_the_workers_checksum_list_names_only_files_of_the_upload(tmp_path):
    """The hole: the worker's checksum list (``.worker.sha256``) was trusted for file names, so a line
    ``<digest>  ../../state/farm/keys/vm1.key`` made the master hash that file of its own and say whether
    it exists and whether its sha256 is the one the worker guessed (with a known file: no complaint)."""
    outside = tmp_path / "outside"
    outside.write_text("a file of the master's\n")
    incoming = tmp_path / "images" / ".incoming" / "x"
    incoming.mkdir(parents=True)
    write_payload(incoming, seed="1")
    names = sorted(p.name for p in incoming.iterdir())
    sums = subprocess.run(["sha256sum", "--", *names], cwd=incoming, capture_output=True, text=True,
                          check=True).stdout
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    for hostile in ("../../../outside", str(outside), ".worker.sha256", ""):
        (incoming / WORKER_SUMS).write_text(sums + f"{digest}  {hostile}\n")
        assert check_transfer(incoming) == [f"{hostile!r}: not a file name of the upload"], hostile
    (incoming / WORKER_SUMS).write_text(sums)
    assert check_transfer(incoming) == []
