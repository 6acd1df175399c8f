"""The tree's own directories replaced by symlinks: the tree root may be writable by others.

``.incoming`` and ``.trash`` are emptied at start-up, ``.state`` takes the index lock, the index cache and
the branch heads, and a publish renames the image into its branch directory.  Each was reached through
whatever stood at its name, so a symlink there (``.incoming -> ../victim``) had the master empty, write
into or rename into a directory outside the tree.  Each is now opened without following a symlink; a
symlink (or a file) is refused, named, and left as it is, and what it points at is untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from buildbot.process.results import FAILURE
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import TestBuildStepMixin
from twisted.trial import unittest as trial

from buildbot_kernel import cli, heads
from buildbot_kernel.imagetree import branchorder, package
from buildbot_kernel.imagetree.index import TreeIndex
from buildbot_kernel.imagetree.leftovers import clean_at_start, clean_leftovers
from buildbot_kernel.imagetree.reserved import RefusedEntry
from buildbot_kernel.imagetree.retention import empty_trash
from buildbot_kernel.imagetree.testing import image_fields, make_image, write_payload
from buildbot_kernel.settings import Build
from buildbot_kernel.steps.publish import HOST_FAILURE_PROPERTY, UploadImage
from buildbot_kernel.target import BuildTarget

from .test_published_files import publish_step

BASE = "http://h/"
SHA = "18097b4c2a6d93e1f3c7a4bbd0e6f9a1b2c3d4e5"
BUILD = Build(name="x86_64", arch="x86_64", config="defconfig")


def victim(tmp_path, name="victim"):
    """A directory outside the tree with what an admin would not want to lose; its listing."""
    d = tmp_path / name
    (d / "sub").mkdir(parents=True)
    (d / "precious").write_text("keep me")
    (d / "sub" / "deep").write_text("keep me too")
    (d / ".tmp-not-ours").write_text("someone else's temp file")
    return d, contents(d)


def contents(d) -> list[str]:
    return sorted(os.path.relpath(os.path.join(top, n), d) for top, dirs, files in os.walk(d) for n in dirs + files)


def target_of(root) -> BuildTarget:
    """Branch ``b`` of the tree, its repository nowhere (nothing is asked of it: the head is given)."""
    return BuildTarget(repository="r", url=str(root / "absent.git"), branch="b", build=BUILD,
                       images_root=str(root), state_dir=str(root.parent / "state"))


def replace_with_link(path, target) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    path.symlink_to(os.path.relpath(target, path.parent))


@pytest.mark.parametrize("name, clean", [(".incoming", clean_leftovers), (".trash", empty_trash)])
def test_a_symlinked_incoming_or_trash_is_refused_and_what_it_points_at_is_kept(tmp_path, name, clean):
    root = tmp_path / "images"
    make_image(root, "b", 1)
    (root / ".trash").mkdir(exist_ok=True)
    outside, before = victim(tmp_path)
    replace_with_link(root / name, outside)
    with pytest.raises(RefusedEntry) as refused:
        clean(root)
    assert contents(outside) == before
    assert str(refused.value).startswith(f"{root / name} is a symbolic link to '../victim', not a directory")
    assert f"rm {root / name}" in str(refused.value)
    assert (root / name).is_symlink()  # reported, not replaced


def test_the_start_reports_both_and_goes_on(tmp_path):
    root = tmp_path / "images"
    make_image(root, "b", 1)
    one, before_one = victim(tmp_path, "one")
    two, before_two = victim(tmp_path, "two")
    replace_with_link(root / ".incoming", one)
    replace_with_link(root / ".trash", two)
    lines = clean_at_start(root, leftovers=True)
    assert [line.split(" is ")[0] for line in lines] == [f"not cleaned: {root / '.trash'}",
                                                        f"not cleaned: {root / '.incoming'}"]
    assert contents(one) == before_one and contents(two) == before_two


def test_a_symlinked_state_directory_takes_no_lock_cache_heads_or_temp_file_removal(tmp_path):
    root = tmp_path / "images"
    make_image(root, "b", 1)
    outside, before = victim(tmp_path)
    replace_with_link(root / ".state", outside)
    index = TreeIndex(root, BASE)
    with pytest.raises(RefusedEntry, match="not a directory"):
        index.regenerate()  # the index lock lives in .state
    with pytest.raises(RefusedEntry):
        index.save_cache()
    with pytest.raises(RefusedEntry):
        branchorder.update(root, "b", branchorder.make_state("b", SHA, None))
    with pytest.raises(RefusedEntry):
        heads.record_head(target_of(root), SHA)
    with pytest.raises(RefusedEntry):
        clean_leftovers(root)
    assert contents(outside) == before


def test_the_index_command_says_so_in_one_line(tmp_path, capsys):
    root = tmp_path / "images"
    make_image(root, "b", 1)
    outside, before = victim(tmp_path)
    replace_with_link(root / ".state", outside)
    assert cli.main(["index", "--root", str(root), "--base-url", BASE]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"buildbot-kernel index: error: {root / '.state'} is a symbolic link to '../victim'")
    assert "Traceback" not in err and contents(outside) == before


def test_a_symlinked_lock_file_is_refused_and_its_target_not_made(tmp_path):
    root = tmp_path / "images"
    make_image(root, "b", 1)
    (root / ".state").mkdir(exist_ok=True)
    (root / ".state" / "index.lock").symlink_to(tmp_path / "made-outside")
    (root / ".state" / "heads.json.lock").symlink_to(tmp_path / "made-outside-too")
    with pytest.raises(RefusedEntry, match="index.lock is a symbolic link .*, not a regular file"):
        TreeIndex(root, BASE).regenerate()
    with pytest.raises(RefusedEntry, match="heads.json.lock"):
        heads.record_head(target_of(root), SHA)
    assert not os.path.lexists(tmp_path / "made-outside") and not os.path.lexists(tmp_path / "made-outside-too")


def test_a_symlinked_branch_directory_gets_no_image_and_the_staging_directory_stays(tmp_path):
    root = tmp_path / "images"
    make_image(root, "other", 1)
    outside, before = victim(tmp_path)
    (root / "b").symlink_to("../victim")
    fields = image_fields("b", 2)
    stage = package.staging_dir(root)
    write_payload(stage)
    package.write_manifest(stage, fields)
    with pytest.raises(RefusedEntry, match=f"{root / 'b'} is a symbolic link to '../victim', not a directory"):
        package.publish(stage, root, "b", fields["name"])
    assert contents(outside) == before
    assert stage.is_dir()


def test_a_symlinked_incoming_gets_no_staging_directory_or_upload(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    outside, before = victim(tmp_path)
    (root / ".incoming").symlink_to("../victim")
    with pytest.raises(RefusedEntry, match="incoming is a symbolic link"):
        package.staging_dir(root)
    with pytest.raises(RefusedEntry, match="incoming is a symbolic link"), \
            package.held_staging(root / ".incoming" / "img.1234abcd"):  # before a build's upload
        pass
    package.remove_staging(root / ".incoming" / "sub")  # an upload not published: not through the link
    assert contents(outside) == before


def test_incoming_swapped_for_a_symlink_during_an_upload_takes_nothing_out_of_the_tree(tmp_path):
    """The hole: the upload step checked ``.incoming`` once, then Buildbot unpacked the whole transfer
    by path; whoever may write the tree's root swapped ``.incoming`` for a symlink meanwhile (the staging
    name is a public build property), and the image was written outside the tree.  The same archive
    call as Buildbot's, through the path the step now gives it."""
    import io
    import tarfile

    root = tmp_path / "images"
    root.mkdir()
    outside, before = victim(tmp_path)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("vmlinuz")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x7fELF"))
    with package.held_staging(root / ".incoming" / "6.1-x.deadbeef") as dest:
        (root / ".incoming").rename(root / ".incoming-real")  # the swap, after the check
        (root / ".incoming").symlink_to("../victim")
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            tar.extractall(path=str(dest), filter="data")  # Buildbot's unpack, by path
    assert contents(outside) == before
    assert (root / ".incoming-real" / "6.1-x.deadbeef" / "vmlinuz").read_bytes() == b"\x7fELF"


class TestTheSteps(TestBuildStepMixin, TestReactorMixin, trial.TestCase):
    """The upload and publish steps fail, naming the entry, as the host's fault (the commit is built
    again once it is fixed, not remembered as failed)."""

    def setUp(self):
        self.setup_test_reactor()
        return self.setup_test_build_step()

    def _refused(self, outside, before, says: str):
        self.expect_outcome(result=FAILURE, state_string=f"{says} (failure)")
        self.expect_property(HOST_FAILURE_PROPERTY, says)
        d = self.run_step()
        return d.addCallback(lambda _: self.assertEqual(contents(outside), before))

    def test_the_publish_step_into_a_symlinked_branch_directory(self):
        root, _fields, incoming = publish_step(self, lambda d: None)
        outside, before = victim(root.parent)
        (root / "drm-tip").symlink_to("../victim")
        return self._refused(outside, before,
                             f"not published: {root / 'drm-tip'} is a symbolic link to '../victim', not a directory")

    def test_the_upload_step_into_a_symlinked_incoming(self):
        tmp = Path(tempfile.mkdtemp(prefix="bbk-upload-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        root = tmp / "images"
        root.mkdir()
        outside, before = victim(root.parent)
        (root / ".incoming").symlink_to("../victim")
        self.setup_step(UploadImage(workersrc="pkg", masterdest=str(root / ".incoming" / "img.0badf00d")))
        return self._refused(outside, before, f"not uploaded: {root / '.incoming'} is a symbolic link to "
                             "'../victim', not a directory")
