"""Index generation: JSON fields, ordering, per-branch files, latest, incomplete images, atomic writes."""

import json
import os
import shutil

import pytest

from buildbot_kernel.imagetree import atomic
from buildbot_kernel.imagetree.index import TreeIndex
from buildbot_kernel.imagetree.package import REQUIRED_FIELDS, write_manifest
from buildbot_kernel.imagetree.rows import filesize
from buildbot_kernel.imagetree.testing import image_fields, make_image, write_payload

BASE = "http://images.example.org:8011/"


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    return root


def read_json(path):
    return json.loads(path.read_text())


def test_index_json_fields_and_order(tree):
    make_image(tree, "drm-intel-next", 1)
    make_image(tree, "drm-intel-next", 3)
    make_image(tree, "topic/x", 2)
    TreeIndex(tree, BASE).regenerate()
    doc = read_json(tree / "index.json")
    assert doc["schema"] == 1 and doc["generated"].endswith("Z")
    names = [e["name"] for e in doc["images"]]
    expected = [image_fields("drm-intel-next", 3)["name"], image_fields("drm-intel-next", 1)["name"],
                image_fields("topic/x", 2)["name"]]
    assert names == expected  # grouped by branch, the branch with the newest commit first; newest first within
    e = doc["images"][2]
    meta = read_json(tree / "topic-x" / e["name"] / "metadata.json")
    assert e["url"] == f"http://images.example.org:8011/topic-x/{e['name']}/"
    assert e["repository_url"] == meta["url"] == "https://git.example.org/fixture.git"
    assert e["path"] == f"topic-x/{e['name']}/"
    assert e["branch"] == "topic/x"
    for key in set(REQUIRED_FIELDS) - {"url"} | {"schema", "files"}:
        assert e[key] == meta[key], key
    assert e["files"]["vmlinuz"]["size"] == 64


def test_commit_date_breaks_build_date_ties(tree):
    a = image_fields("b", 1)
    b = image_fields("b", 2)
    b["build_date"] = a["build_date"]
    for fields in (b, a):
        d = tree / "b" / fields["name"]
        d.mkdir(parents=True)
        write_payload(d)
        write_manifest(d, fields)
    TreeIndex(tree, BASE).regenerate()
    assert [e["name"] for e in read_json(tree / "index.json")["images"]] == [b["name"], a["name"]]


def test_per_branch_files_and_latest(tree):
    for i in (1, 5, 3):
        make_image(tree, "fixes", i)
    make_image(tree, "next", 4)
    TreeIndex(tree, BASE).regenerate()
    fixes = read_json(tree / "fixes" / "index.json")
    assert fixes["branch"] == "fixes"
    assert [e["name"] for e in fixes["images"]] == [image_fields("fixes", i)["name"] for i in (5, 3, 1)]
    assert (tree / "fixes" / "latest").read_text().strip() == image_fields("fixes", 5)["name"]
    assert (tree / "next" / "latest").read_text().strip() == image_fields("next", 4)["name"]
    html = (tree / "fixes" / "index.html").read_text()
    assert '<base href="../">' in html and image_fields("fixes", 1)["name"] in html
    root_html = (tree / "index.html").read_text()
    assert root_html.index('id="branch-fixes"') < root_html.index('id="branch-next"')  # newest branch first
    assert "commit 5 on fixes" in root_html and "64 B" in root_html


def test_html_escapes_metadata(tree):
    make_image(tree, "b", 1)
    d = next((tree / "b").iterdir())
    fields = json.loads((d / "metadata.json").read_text())
    fields["subject"] = "<script>alert(1)</script>"
    write_manifest(d, {k: v for k, v in fields.items() if k not in ("files", "schema")})
    TreeIndex(tree, BASE).regenerate()
    html = (tree / "index.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_rows_are_written_in_place_of_their_placeholders_only(tree):
    """The pages are written as pieces around placeholders (index._PageRows): text from the tree that
    looks like a placeholder stays text, and every row lands in its branch's table, in order."""
    for n in (1, 2):
        make_image(tree, "b", n)
    make_image(tree, "c", 3)
    d = next((tree / "c").iterdir())
    fields = json.loads((d / "metadata.json").read_text())
    fields["subject"] = "\x00" + "0" * 16 + ":0\x00 fake"
    write_manifest(d, {k: v for k, v in fields.items() if k not in ("files", "schema")})
    TreeIndex(tree, BASE).regenerate()
    html = (tree / "index.html").read_text()
    assert "\x00" + "0" * 16 + ":0\x00 fake" in html and html.count("<tr id=") == 3
    b_rows = [image_fields("b", 2)["name"], image_fields("b", 1)["name"]]  # newest first
    assert html.index('id="branch-b"') < html.index(f'<tr id="{b_rows[0]}"') < html.index(f'<tr id="{b_rows[1]}"')
    branch = (tree / "b" / "index.html").read_text()
    assert branch.count("<tr id=") == 2 and branch.rstrip().endswith("</html>")
    assert branch.index(f'<tr id="{b_rows[0]}"') < branch.index(f'<tr id="{b_rows[1]}"') < branch.index("</table>")


def test_incomplete_and_hidden_directories_are_not_listed(tree):
    good = make_image(tree, "b", 1)
    half = tree / "b" / image_fields("b", 2)["name"]
    shutil.copytree(good, half)
    fields = image_fields("b", 2)
    write_manifest(half, fields)
    with open(half / "vmlinuz", "ab") as f:
        f.write(b"still copying")
    nomanifest = tree / "b" / "6.1.0-b_000000_20240101_+"
    nomanifest.mkdir()
    (tree / ".incoming" / "x" / "y").mkdir(parents=True)
    idx = TreeIndex(tree, BASE)
    res = idx.regenerate()
    assert [e["name"] for e in res.images] == [good.name]
    assert "vmlinuz is" in res.skipped[f"b/{half.name}"]
    assert f"b/{nomanifest.name}" in res.skipped
    # the copy finishes: same manifests, so only the size recheck can notice
    (half / "vmlinuz").write_bytes((good / "vmlinuz").read_bytes())
    write_manifest(half, fields)
    assert [e["name"] for e in idx.regenerate().images] == [half.name, good.name]


def test_wrong_directory_for_metadata_is_not_listed(tree):
    img = make_image(tree, "b", 1)
    moved = tree / "other" / img.name
    moved.parent.mkdir()
    img.rename(moved)
    res = TreeIndex(tree, BASE).regenerate()
    assert res.images == []
    assert "does not belong" in res.skipped[f"other/{img.name}"]


def test_regeneration_skips_unchanged_files_and_follows_deletes(tree):
    a = make_image(tree, "b", 1)
    b = make_image(tree, "b", 2)
    idx = TreeIndex(tree, BASE)
    first = idx.regenerate()
    assert set(first.written) == {"index.json", "index.html", "b/index.json", "b/index.html", "b/latest"}
    assert idx.regenerate().written == []
    shutil.rmtree(b)
    res = idx.regenerate()
    assert "b/latest" in res.written
    assert (tree / "b" / "latest").read_text().strip() == a.name
    shutil.rmtree(a)
    idx.regenerate()
    assert read_json(tree / "b" / "index.json")["images"] == []
    assert not (tree / "b" / "latest").exists()
    assert read_json(tree / "index.json")["images"] == []


def test_exclude_leaves_images_out(tree):
    a = make_image(tree, "b", 1)
    make_image(tree, "b", 2)
    res = TreeIndex(tree, BASE).regenerate(exclude={f"b/{a.name}/"})
    assert a.name not in [e["name"] for e in res.images] and len(res.images) == 1


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "index.json"
    atomic.atomic_write(p, "old")

    class Boom(Exception):
        pass

    class Exploding(str):
        def encode(self):
            raise Boom

    with pytest.raises(Boom):
        atomic.atomic_write(p, Exploding("new"))
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["index.json"]  # no temp file left behind


def test_atomic_write_replaces_by_rename(tmp_path):
    p = tmp_path / "f"
    atomic.atomic_write(p, "one")
    with open(p) as reader:  # a reader holding the old file keeps seeing it whole
        atomic.atomic_write(p, "two")
        assert reader.read() == "one"
    assert p.read_text() == "two"


@pytest.mark.parametrize("n,text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                    (10 * 2**20, "10.0 MiB"), (3 * 2**40, "3072.0 GiB")])
def test_filesize(n, text):
    assert filesize(n) == text


def test_saved_cache_is_used_and_revalidated(tree):
    a = make_image(tree, "b", 1)
    b = make_image(tree, "b", 2)
    first = TreeIndex(tree, BASE)
    first.regenerate()
    first.save_cache()
    # b changes after the cache was saved: its manifests are rewritten with another subject
    fields = json.loads((b / "metadata.json").read_text())
    fields["subject"] = "rewritten"
    write_manifest(b, {k: v for k, v in fields.items() if k not in ("files", "schema")})
    second = TreeIndex(tree, "http://other/")
    assert second.load_cache() == 2
    images = {e["name"]: e for e in second.regenerate().images}
    assert images[b.name]["subject"] == "rewritten"  # stale cache entry not used
    assert images[a.name]["url"] == f"http://other/b/{a.name}/"  # JSON re-encoded for the new URL
    assert images[a.name]["subject"] == "commit 1 on b"


def test_damaged_cache_is_ignored(tree):
    make_image(tree, "b", 1)
    (tree / ".state").mkdir()
    (tree / ".state" / "index-cache.json").write_text('{"schema": 1, "images": {"x": [1]}}')
    idx = TreeIndex(tree, BASE)
    assert idx.load_cache() == 0
    assert len(idx.regenerate().images) == 1


def _rewrite_metadata(image_dir, text: str) -> None:
    """Replace metadata.json behind the manifest's back (a hand edit, a broken copy)."""
    (image_dir / "metadata.json").write_text(text, encoding="utf-8")


def test_an_image_whose_metadata_cannot_be_encoded_is_left_out_and_the_rest_indexed(tree):
    good = make_image(tree, "b", 1)
    surrogate = make_image(tree, "b", 2)
    meta = read_json(surrogate / "metadata.json")
    text = json.dumps(meta).replace(json.dumps(meta["subject"]), '"broken \\ud800 subject"')
    _rewrite_metadata(surrogate, text)
    not_json = make_image(tree, "b", 3)
    _rewrite_metadata(not_json, "{not json")
    not_object = make_image(tree, "b", 4)
    _rewrite_metadata(not_object, "[1, 2]")
    res = TreeIndex(tree, BASE).regenerate()
    assert [e["name"] for e in res.images] == [good.name]
    assert "metadata field 'subject' cannot be encoded as UTF-8 (surrogates not allowed" in \
        res.skipped[f"b/{surrogate.name}"]
    assert "metadata.json: not valid JSON" in res.skipped[f"b/{not_json.name}"]
    assert "metadata.json: expected a JSON object" in res.skipped[f"b/{not_object.name}"]
    assert [e["name"] for e in read_json(tree / "index.json")["images"]] == [good.name]
    assert [e["name"] for e in read_json(tree / "b" / "index.json")["images"]] == [good.name]


def test_a_surrogate_written_as_raw_bytes_is_caught_too(tree):
    """A lone surrogate spelled as UTF-8 bytes (json would decode it with "surrogatepass"), not as a \\u
    escape: refused all the same, naming the field; valid text starting with the same 0xED byte is not."""
    good = make_image(tree, "b", 1)
    raw = make_image(tree, "b", 2)
    meta = read_json(raw / "metadata.json")
    text = json.dumps(meta, ensure_ascii=False).replace(meta["subject"], "broken SURROGATE subject")
    (raw / "metadata.json").write_bytes(text.encode().replace(b"SURROGATE", b"\xed\xa0\x80"))
    hangul = make_image(tree, "b", 3)  # 0xED also starts valid UTF-8 (U+D000-U+D7FF): still listed
    meta = read_json(hangul / "metadata.json")
    meta["subject"] = "\ud55c\uae00 subject"
    _rewrite_metadata(hangul, json.dumps(meta, ensure_ascii=False))
    res = TreeIndex(tree, BASE).regenerate()
    assert sorted(e["name"] for e in res.images) == sorted([good.name, hangul.name])
    assert "metadata field 'subject' cannot be encoded as UTF-8 (surrogates not allowed" in \
        res.skipped[f"b/{raw.name}"]


def test_a_test_result_holding_a_lone_surrogate_is_left_out_not_the_index(tree):
    """Result files are written by whoever reaches the tree; one the index could not write as UTF-8 is
    left out like any result that does not parse, and the image and its other results stay listed."""
    from buildbot_kernel.imagetree import results

    img = make_image(tree, "b", 1)
    results.write_result(img, "boot", {"result": "pass", "machine": "vm1"})
    results.write_result(img, "smoke", {"result": "fail", "machine": "\udc80"})  # json writes "\udc80"
    res = TreeIndex(tree, BASE).regenerate()
    assert [e["name"] for e in res.images] == [img.name]
    assert res.images[0]["tests"] == {"boot": {"result": "pass", "machine": "vm1"}}
    assert json.loads((tree / "index.json").read_text("utf-8"))["images"][0]["tests"] == res.images[0]["tests"]
