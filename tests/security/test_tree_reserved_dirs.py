"""The tree's own directories replaced by symlinks: the tree root may be writable by others.

``.incoming`` and ``.trash`` are emptied at start-up.  Each was reached through whatever stood at its
name, so a symlink there (``.incoming -> ../victim``) had the master empty a directory outside the tree.
Each is now opened without following a symlink; a symlink (or a file) is refused, named, and left as it
is, and what it points at is untouched.
"""

from __future__ import annotations

import os
import shutil

import pytest

from buildbot_kernel.imagetree.leftovers import clean_at_start, clean_leftovers
from buildbot_kernel.imagetree.reserved import RefusedEntry
from buildbot_kernel.imagetree.retention import empty_trash
from buildbot_kernel.imagetree.testing import make_image


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
