"""A forged per-image cache (``<root>/.state/index-cache.json``) on the shared tree.

A restart loads it so that it need not re-read 10,000 manifests.  It used to hold each image's rendered
HTML row and JSON line, written into the pages as they were while the image's stat key matched: whoever
could write ``.state`` could put any HTML into the index pages.  The cache now holds data only; what it
claims is checked as a first read of the manifests checks it, then rendered like anything else.
"""

from __future__ import annotations

import json

import pytest

from buildbot_kernel.imagetree.index import CACHE, TreeIndex
from buildbot_kernel.imagetree.testing import make_image

BASE = "http://h/"
SCRIPT = "<script>alert(1)</script>"


def saved(tmp_path):
    """A tree of one image, its index and its saved cache: (root, image dir, cache head, cached line)."""
    root = tmp_path / "images"
    img = make_image(root, "b", 1)
    first = TreeIndex(root, BASE)
    first.regenerate()
    first.save_cache()
    head, line = (root / CACHE).read_text().splitlines()
    return root, img, head, json.loads(line)


def reload(root, head: str, line: list) -> tuple[int, TreeIndex]:
    (root / CACHE).write_text(f"{head}\n{json.dumps(line)}\n")
    again = TreeIndex(root, BASE)
    return again.load_cache(), again


def test_html_in_a_cached_field_is_escaped_in_the_pages(tmp_path):
    root, img, head, line = saved(tmp_path)
    line[2]["subject"] = SCRIPT  # a valid value: the cache may claim it, the pages escape it
    kept, again = reload(root, head, line)
    assert kept == 1
    again.regenerate()
    for page in (root / "index.html", root / "b" / "index.html"):
        text = page.read_text()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and SCRIPT not in text


def test_a_row_of_html_in_the_old_cache_format_is_never_written(tmp_path):
    """The format before: [path, key, metadata, json line, html row, tests] (schema 4)."""
    root, img, _head, line = saved(tmp_path)
    path, key, meta, tests = line
    forged = [path, key, meta, json.dumps({"name": img.name, "injected": True}), f"<tr><td>{SCRIPT}</td></tr>", tests]
    for head in ('{"schema": 4}', '{"schema": 5}'):
        kept, again = reload(root, head, forged)
        assert kept == 0
        again.regenerate()
        assert SCRIPT not in (root / "index.html").read_text()
        assert "injected" not in (root / "index.json").read_text()


def _bad(line, what):
    path, key, meta, tests = json.loads(json.dumps(line))
    if what == "sha":
        meta["sha"] = "not-a-commit"
    elif what == "name":
        meta["name"] = meta["name"] + "-other"
    elif what == "branch":
        meta["branch"] = "elsewhere"
    elif what == "files":
        meta["files"] = {"vmlinuz": {"size": 1, "sha256": "../../etc/passwd"}}
    elif what == "file-name":
        meta["files"]["../other/vmlinuz"] = dict(meta["files"]["vmlinuz"])
    elif what == "files-shape":
        meta["files"] = ["vmlinuz"]
    elif what == "result":
        tests = {"boot": {"result": "<b>pwned</b>"}}
    elif what == "test-name":
        tests = {"../boot": {"result": "pass"}}
    elif what == "key":
        key = ["1"] * len(key)
    elif what == "metadata":
        meta = [meta]
    return [path, key, meta, tests]


@pytest.mark.parametrize("what", ["sha", "name", "branch", "files", "file-name", "files-shape", "result", "test-name",
                                  "key", "metadata"])
def test_a_cached_claim_the_manifests_would_not_pass_is_dropped_and_the_image_read_again(tmp_path, what):
    root, img, head, line = saved(tmp_path)
    real = (root / "index.json").read_text()
    kept, again = reload(root, head, _bad(line, what))
    assert kept == 0
    result = again.regenerate()
    assert [e["name"] for e in result.images] == [img.name]
    assert (root / "index.json").read_text() == real  # read from the image's own manifests
