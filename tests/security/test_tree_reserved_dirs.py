"""The tree's own directories replaced by symlinks: the tree root may be writable by others.

``.incoming`` and ``.trash`` are emptied at start-up, ``.state`` takes the index lock, the index cache and
the branch heads.  Each was reached through whatever stood at its name, so a symlink there
(``.incoming -> ../victim``) had the master empty or write into a directory outside the tree.
Each is now opened without following a symlink; a symlink (or a file) is refused, named, and left as it
is, and what it points at is untouched.
"""

from __future__ import annotations

import os
import shutil

import pytest

from buildbot_kernel import heads
from buildbot_kernel.imagetree import branchorder
from buildbot_kernel.imagetree.index import TreeIndex
from buildbot_kernel.imagetree.leftovers import clean_at_start, clean_leftovers
from buildbot_kernel.imagetree.reserved import RefusedEntry
from buildbot_kernel.imagetree.retention import empty_trash
from buildbot_kernel.imagetree.testing import make_image
from buildbot_kernel.settings import Build
from buildbot_kernel.target import BuildTarget

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
