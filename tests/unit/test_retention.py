"""Retention: newest K per branch, byte budget, pinned images survive, deletion never shows in the index."""

import json

import pytest

from buildbot_kernel.imagetree import retention
from buildbot_kernel.imagetree.package import write_manifest
from buildbot_kernel.imagetree.record import ImageRecord
from buildbot_kernel.imagetree.testing import image_fields, make_image, write_payload
from buildbot_kernel.imagetree.tree import ImageTree
from buildbot_kernel.utctime import iso_utc


def img(branch, i, size=100):
    meta = {"build_date": iso_utc(i * 3600), "commit_date": iso_utc(i * 3600),
            "files": {"vmlinuz": {"size": size, "sha256": "0" * 64}}}
    return ImageRecord.from_metadata(branch, f"{branch}-{i}", meta)


def names(p):
    return sorted(i.name for i in p.delete)


def tree_images():
    # newest first: a-6 b-5 a-4 b-3 a-2 b-1 a-0
    return [img("a" if i % 2 == 0 else "b", i) for i in range(6, -1, -1)]


def test_no_limits_keeps_everything():
    assert retention.plan(tree_images()).delete == []


def test_keep_per_branch():
    assert names(retention.plan(tree_images(), keep_per_branch=2)) == ["a-0", "a-2", "b-1"]


def test_pinned_survive_keep_per_branch():
    p = retention.plan(tree_images(), keep_per_branch=1, pinned={"a-0", "b/b-1/"})
    assert names(p) == ["a-2", "a-4", "b-3"]


def test_budget_deletes_oldest_first_but_keeps_each_latest():
    p = retention.plan(tree_images(), max_bytes=350)
    assert names(p) == ["a-0", "a-2", "b-1", "b-3"]
    assert p.kept_bytes == 300 and not p.over_budget
    p = retention.plan(tree_images(), max_bytes=50)  # only the two latest remain, still over
    assert names(p) == ["a-0", "a-2", "a-4", "b-1", "b-3"] and p.over_budget
    assert "still over the byte budget" in p.describe()


def test_budget_respects_pins_and_combines_with_k():
    p = retention.plan(tree_images(), keep_per_branch=3, max_bytes=300, pinned={"a-2"})
    # K=3 drops a-0; the budget then removes the oldest unpinned non-latest: b-1, (not a-2), b-3, a-4
    assert names(p) == ["a-0", "a-4", "b-1", "b-3"] and p.kept_bytes == 300


def test_negative_limits_rejected():
    with pytest.raises(ValueError, match="keep_per_branch"):
        retention.plan([], keep_per_branch=-1)


def test_apply_retention_on_a_real_tree(tmp_path):
    pins = {image_fields("b", 0)["name"]}
    tree = ImageTree(tmp_path, "http://h/", keep_per_branch=2, pins=lambda: pins)
    seen_in_index = []

    def check_index(_result):  # every index write lists only directories that exist
        for e in json.loads((tmp_path / "index.json").read_text())["images"]:
            seen_in_index.append((tmp_path / e["path"]).is_dir())

    tree.listeners.append(check_index)
    for i in range(5):
        stage = tree.staging_dir()
        fields = image_fields("b", i)
        write_payload(stage)
        write_manifest(stage, fields)
        tree.publish(stage, "b", fields["name"])
    listed = [e["name"] for e in json.loads((tmp_path / "index.json").read_text())["images"]]
    assert listed == [image_fields("b", i)["name"] for i in (4, 3, 0)]  # 0 is pinned
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.is_dir()) == sorted(listed)
    assert list((tmp_path / ".trash").iterdir()) == []
    assert seen_in_index and all(seen_in_index)


def test_empty_trash_removes_leftovers(tmp_path):
    d = make_image(tmp_path, "b", 1)
    t = retention.move_to_trash(tmp_path, f"b/{d.name}/")
    assert t.parent.name == ".trash" and not d.exists()
    retention.empty_trash(tmp_path)
    assert not t.exists()
