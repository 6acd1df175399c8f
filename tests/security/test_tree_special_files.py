"""Special files where the scan reads small files: the tree is written by others (NFS, an admin's copy).

A ``metadata.json`` that is a symlink to ``/dev/zero`` used to be read until memory ran out, and a
``SHA256SUMS`` or a test result that is a FIFO blocked the scan's open for ever (the index stops
regenerating: no new image is listed again).  Each is now an incomplete image or an ignored result with
a reason, and the rest of the tree is indexed.
"""

from __future__ import annotations

import os

import pytest

from buildbot_kernel.imagetree import results
from buildbot_kernel.imagetree.index import TreeIndex
from buildbot_kernel.imagetree.package import MAX_SMALL_FILE
from buildbot_kernel.imagetree.testing import make_image

BASE = "http://h/"


@pytest.mark.timeout(60)
def test_dev_zero_fifo_and_huge_manifests_are_incomplete_images_and_the_rest_is_indexed(tmp_path):
    root = tmp_path / "images"
    good = make_image(root, "b", 1)
    zero = make_image(root, "b", 2)
    (zero / "metadata.json").unlink()
    (zero / "metadata.json").symlink_to("/dev/zero")
    fifo = make_image(root, "b", 3)
    (fifo / "SHA256SUMS").unlink()
    os.mkfifo(fifo / "SHA256SUMS")
    huge = make_image(root, "b", 4)
    with open(huge / "metadata.json", "ab") as f:
        f.truncate(MAX_SMALL_FILE + 1)  # sparse: no disk, but more than a manifest may be
    res = TreeIndex(root, BASE).regenerate()
    assert [e["name"] for e in res.images] == [good.name]
    assert "larger than 16 MiB" in res.skipped[f"b/{zero.name}"]
    assert "SHA256SUMS" in res.skipped[f"b/{fifo.name}"] or "metadata.json" in res.skipped[f"b/{fifo.name}"]
    assert "larger than 16 MiB" in res.skipped[f"b/{huge.name}"]


@pytest.mark.timeout(60)
def test_a_fifo_or_dev_zero_test_result_is_ignored_and_the_image_listed(tmp_path):
    root = tmp_path / "images"
    img = make_image(root, "b", 1)
    results.write_result(img, "boot", {"result": "pass", "machine": "vm1"})
    os.mkfifo(img / "tests" / "smoke.json")
    (img / "tests" / "zero.json").symlink_to("/dev/zero")
    res = TreeIndex(root, BASE).regenerate()
    assert [e["name"] for e in res.images] == [img.name]
    assert res.images[0]["tests"] == {"boot": {"result": "pass", "machine": "vm1"}}
