"""JSON from outside nested deeper than anything we write: an image's metadata.json, an index.json, a
remote default kernel's metadata.

orjson reads 1024 levels and writes 254, and json stops at the interpreter's recursion limit: one image
whose metadata.json held a list nested 300 deep made every index regeneration fail with a TypeError at
the encoder, for all images, and one nested 100,000 deep with a RecursionError while the scan explained
why the file did not parse.  A hostile index.json did the same to every reader of an index (the bisect,
``images find``).  Each is now refused with a message that says so (buildbot_kernel/jsondepth.py).
"""

from __future__ import annotations

import json

import pytest
from httpstub import answering

from buildbot_kernel.farm import default_kernel
from buildbot_kernel.imagetree import branchorder, indexfile
from buildbot_kernel.imagetree.index import CACHE, TreeIndex
from buildbot_kernel.imagetree.package import read_metadata
from buildbot_kernel.imagetree.testing import make_image
from buildbot_kernel.jsondepth import MAX_DEPTH, deeper_than, may_nest_deeper
from buildbot_kernel.ledger import BuildLedger

DEPTHS = (MAX_DEPTH + 1, 300, 100_000)  # just over ours; over orjson's encoder; over every parser


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deepen(image_dir, depth: int) -> None:
    """Put a field nested ``depth`` deep into the image's metadata.json (the manifests still agree)."""
    p = image_dir / "metadata.json"
    p.write_bytes(p.read_bytes().replace(b'"arch":', b'"deep": ' + nested(depth) + b', "arch":', 1))


@pytest.mark.parametrize("depth", DEPTHS)
def test_an_image_nested_too_deep_is_left_out_and_the_rest_indexed(tmp_path, depth):
    root = tmp_path / "images"
    good = make_image(root, "b", 1)
    deep = make_image(root, "b", 2)
    deepen(deep, depth)
    res = TreeIndex(root, "http://h/").regenerate()
    assert [e["name"] for e in res.images] == [good.name]
    assert "nest" in res.skipped[f"b/{deep.name}"] and "metadata.json" in res.skipped[f"b/{deep.name}"]
    with pytest.raises(ValueError, match="metadata.json"):
        read_metadata(deep)


def test_metadata_at_the_limit_is_listed(tmp_path):
    root = tmp_path / "images"
    img = make_image(root, "b", 1)
    deepen(img, MAX_DEPTH - 1)  # inside the top-level object: MAX_DEPTH levels in all
    res = TreeIndex(root, "http://h/").regenerate()
    assert [e["name"] for e in res.images] == [img.name] and not res.skipped


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("shape", ["line per image", "one line"])
def test_an_index_nested_too_deep_is_unreadable_not_a_crash(depth, shape):
    sep = b"\n" if shape == "line per image" else b""
    raw = b'{"schema": 1, "images": [' + sep + b'{"a": ' + nested(depth) + b"}" + sep + b"]}" + sep
    with pytest.raises(indexfile.IndexUnreadable, match="is not an index.json: .*(nests objects|nested deeper)"):
        indexfile.parse_index(raw)


def test_the_depth_check_counts_levels_and_skips_shallow_text():
    assert not deeper_than({"files": {"vmlinuz": {"size": 1}}}, 3) and deeper_than({"a": [[{}]]}, 3)
    assert not may_nest_deeper('{"subject": "[PATCH] x"}', 3) and may_nest_deeper(b"[[[[", 3)


@pytest.mark.parametrize("depth", (300, 100_000))
def test_a_remote_default_kernel_nested_too_deep_is_a_setting_error(tmp_path, depth):
    with answering(b'{"name": ' + nested(depth) + b"}") as remote:
        refused = "cannot read .*metadata.json: .*(nests|nested deeper)"
        with pytest.raises(default_kernel.DefaultKernelError, match=refused):
            default_kernel.resolve("m", remote.url + "b/img/", tmp_path / "index.json")
        assert remote.paths == ["/b/img/metadata.json"]


def test_a_heads_file_nested_too_deep_is_no_heads_and_is_replaced_at_the_next_record(tmp_path):
    """.state/heads.json lives on the shared tree: a deep one raised RecursionError out of every
    regeneration and out of recording the next head."""
    root = tmp_path / "images"
    img = make_image(root, "b", 1)
    heads = root / branchorder.HEADS_FILE
    heads.parent.mkdir(exist_ok=True)
    heads.write_bytes(b'{"schema": 1, "branches": {"b": ' + nested(100_000) + b"}}")
    res = TreeIndex(root, "http://h/").regenerate()
    assert [e["name"] for e in res.images] == [img.name]
    sha = json.loads((img / "metadata.json").read_text())["sha"]
    branchorder.update(root, "b", branchorder.make_state("b", sha, None))
    assert branchorder.HeadsFile(root).load()["b"].head == sha


def test_ledger_lines_nested_too_deep_or_not_records_are_skipped(tmp_path):
    ledger = BuildLedger(tmp_path / "ledger.jsonl")
    ledger.record("r", "b", "a" * 40, "x86_64", "built")
    with open(tmp_path / "ledger.jsonl", "ab") as f:
        f.write(nested(100_000) + b"\n[1]\n" + b'{"x": ' + nested(300) + b"}\n")
    assert ledger.get("r", "b", "a" * 40, "x86_64")["outcome"] == "built"


def test_the_dashboard_reads_a_bisect_record_nested_too_deep_as_missing(tmp_path):
    from buildbot_kernel.master import dashboard_data

    (tmp_path / "result.json").write_bytes(b'{"request": ' + nested(100_000) + b"}")
    assert dashboard_data._read_json(tmp_path / "result.json") is None


@pytest.mark.parametrize("depth", (300, 100_000))
def test_a_saved_index_cache_nested_too_deep_is_ignored(tmp_path, depth):
    """The per-image cache (.state/index-cache.json) a restart loads: a deep line or head raised out of
    load_cache at the master's start, or seeded metadata the index's encoder could not write."""
    root = tmp_path / "images"
    img = make_image(root, "b", 1)
    first = TreeIndex(root, "http://h/")
    first.regenerate()
    first.save_cache()
    cache = root / CACHE
    head, line = cache.read_text().splitlines()[:2]
    deep = line.replace('"arch":', '"deep":' + nested(depth).decode() + ',"arch":', 1)
    assert deep != line
    for text in (f"{head}\n{deep}\n", '{"schema": ' + nested(depth).decode() + "}\n"):
        cache.write_text(text)
        again = TreeIndex(root, "http://h/")
        assert again.load_cache() == 0
        assert [e["name"] for e in again.regenerate().images] == [img.name]
