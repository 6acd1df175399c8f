"""Retention on a branch with a long name, and a retention that fails part-way.

The trash name was ``<branch dir>--<image name>--<8 hex>``: for a branch of 113 characters (which the
settings accept) that is over NAME_MAX, so ``os.rename`` raised ENAMETOOLONG after the index had been
rewritten without the doomed images.  The later deletions never happened, and since the image stayed,
every later publish on every branch raised the same error.  The trash name is now a short id, each image
is deleted on its own (one that fails is logged, kept and listed again), and a retention error never
fails a publish that already renamed its image into the tree.
"""

from __future__ import annotations

import errno
import json
import logging

from buildbot_kernel.imagetree import retention
from buildbot_kernel.imagetree.package import write_manifest
from buildbot_kernel.imagetree.testing import image_fields, write_payload
from buildbot_kernel.imagetree.tree import ImageTree

LONG = "feature-" + "a" * 105  # 113 characters


def publish(tree: ImageTree, branch: str, i: int) -> str:
    stage = tree.staging_dir()
    fields = image_fields(branch, i)
    write_payload(stage, seed=fields["sha"])
    write_manifest(stage, fields)
    tree.publish(stage, branch, fields["name"])
    return fields["name"]


def listed(root) -> list[str]:
    return [e["name"] for e in json.loads((root / "index.json").read_text())["images"]]


def test_a_long_branch_name_is_trimmed_to_its_newest_images_and_other_branches_still_publish(tmp_path):
    tree = ImageTree(tmp_path, "http://h/", keep_per_branch=1)
    names = [publish(tree, LONG, i) for i in range(3)]
    other = publish(tree, "b", 1)
    assert sorted(listed(tmp_path)) == sorted([names[-1], other])
    assert sorted(p.name for p in (tmp_path / LONG).iterdir() if p.is_dir()) == [names[-1]]
    assert list((tmp_path / ".trash").iterdir()) == []


def test_one_image_that_cannot_be_deleted_is_kept_listed_and_the_others_go(tmp_path, monkeypatch, caplog):
    tree = ImageTree(tmp_path, "http://h/", keep_per_branch=1)
    names = [publish(tree, "b", i) for i in range(3)]  # each publish trims to the newest: 2 stays
    tree.keep_per_branch = 0
    more = [publish(tree, "b", i) for i in range(3, 6)]
    move = retention.move_to_trash
    stuck = f"b/{more[0]}/"

    def failing(root, rel_path):
        if rel_path == stuck:
            raise OSError(errno.EIO, "Input/output error", rel_path)
        return move(root, rel_path)

    monkeypatch.setattr(retention, "move_to_trash", failing)
    tree.keep_per_branch = 1
    with caplog.at_level(logging.WARNING):
        p = tree.apply_retention()
    assert list(p.failed) == [stuck] and "Input/output error" in p.describe()
    assert f"retention: cannot delete {stuck}, kept" in caplog.text
    kept = sorted(p.name for p in (tmp_path / "b").iterdir() if p.is_dir())
    assert kept == sorted([more[-1], more[0]])  # the others of names/more went
    assert sorted(listed(tmp_path)) == kept  # the stuck one is listed again
    assert names[-1] not in kept


def test_a_retention_error_does_not_fail_the_publish(tmp_path, monkeypatch, caplog):
    tree = ImageTree(tmp_path, "http://h/", keep_per_branch=1)
    publish(tree, "b", 1)

    def broken(*args, **kwargs):
        raise OSError(errno.ENAMETOOLONG, "File name too long")

    monkeypatch.setattr(retention, "plan", broken)
    with caplog.at_level(logging.ERROR):
        name = publish(tree, "b", 2)
    assert name in listed(tmp_path)  # published and listed
    assert "retention after publishing" in caplog.text and "File name too long" in caplog.text
