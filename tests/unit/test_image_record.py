"""The one image record (imagetree/record.py), the one index reader (imagetree/indexfile.py) and the one
metadata.json reader with the completeness rule (scan.load_image): round trips, hostile entries, places."""

from __future__ import annotations

import json
import os
from urllib.parse import unquote

import pytest

from buildbot_kernel.imagetree.index import TreeIndex
from buildbot_kernel.imagetree.indexfile import IndexUnreadable, decode, parse_index, read_index
from buildbot_kernel.imagetree.record import EntryError, ImageRecord
from buildbot_kernel.imagetree.scan import IncompleteImage, branch_images, is_published, load_image
from buildbot_kernel.imagetree.testing import make_image
from buildbot_kernel.utctime import iso_utc, parse_iso_utc
from tests.bisect.imagetree import serve_dir

BASE = "http://images.example.org:8011/"
SHA256 = "0" * 64


def entry(**over) -> dict:
    e = {"name": "6.1.0-topic-x_abcdef_20240101_+", "sha": "ab" * 20, "build": "x86_64", "branch": "topic/x",
         "url": BASE + "topic-x/6.1.0-topic-x_abcdef_20240101_+/", "path": "topic-x/6.1.0-topic-x_abcdef_20240101_+/",
         "files": {"vmlinuz": {"size": 3, "sha256": SHA256}}, "repository_url": "https://git.example.org/k.git",
         "on_demand": False, "head": True, "subject": "drm: fix"}
    e.update(over)
    return e


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    return root


def test_a_tree_image_round_trips_through_its_index_entry(tree):
    img = make_image(tree, "topic/x", 3)
    record = load_image(img)
    assert (record.branch_dir, record.name, record.path) == ("topic-x", img.name, f"topic-x/{img.name}/")
    assert record.metadata == json.loads((img / "metadata.json").read_text())
    e = record.to_index_entry(BASE)
    assert e["url"] == f"{BASE}topic-x/{img.name}/" and e["repository_url"] == record.metadata["url"]
    assert e["path"] == record.path and e["on_demand"] is False and e["head"] is False
    back = ImageRecord.from_index_entry(e)
    assert back.to_index_entry() == e  # the entry and the record say the same, in both directions
    assert (back.sha, back.build, back.branch, back.branch_dir, back.url) == (
        record.sha, record.build, "topic/x", "topic-x", e["url"])
    # the repository URL is back under "url"; on_demand is written to every entry as a boolean
    assert back.metadata == {**record.metadata, "on_demand": False}


def test_urls_quote_what_is_not_url_safe():
    odd = ImageRecord.from_metadata("b", "name with space#1", {"files": {}})
    assert odd.to_index_entry(BASE)["url"] == BASE + "b/name%20with%20space%231/"
    assert ImageRecord.from_metadata("b", "6.1.0-b_aa_20240101_+", {}).to_index_entry(BASE)["url"].endswith(
        "/b/6.1.0-b_aa_20240101_+/")


@pytest.mark.parametrize("over, words", [
    ({"name": ".."}, "name"),
    ({"name": "a/b"}, "name"),
    ({"name": ".hidden"}, "name"),
    ({"name": ""}, "name"),
    ({"sha": "abc"}, "not a full commit id"),
    ({"sha": 42}, "not a full commit id"),
    ({"build": "../x86_64"}, "build"),
    ({"branch": "topic/../x"}, "branch"),
    ({"files": {"../vmlinuz": {"size": 3, "sha256": SHA256}}}, "file name"),
    ({"files": {"vmlinuz": {"size": -1, "sha256": SHA256}}}, "files['vmlinuz'] must be"),
    ({"files": {"vmlinuz": {"size": 3, "sha256": "xyz"}}}, "files['vmlinuz'] must be"),
    ({"files": {}}, "files must map"),
    ({"url": 7}, "is not a string"),
])
def test_hostile_entries_are_refused_naming_the_entry_and_the_reason(over, words):
    with pytest.raises(EntryError, match="images\\[3\\]") as e:
        ImageRecord.from_index_entry(entry(**over), BASE + "index.json", "index.json: images[3]")
    assert words in str(e.value)


def test_not_an_object_or_missing_keys():
    with pytest.raises(EntryError, match="is not an object"):
        ImageRecord.from_index_entry(["a"])
    with pytest.raises(EntryError, match="has no 'files'"):
        ImageRecord.from_index_entry({k: v for k, v in entry().items() if k != "files"})


def test_confined_urls_stay_under_the_index_and_fall_back_to_the_path():
    base = BASE + "index.json"
    assert ImageRecord.from_index_entry(entry(), base).url == entry()["url"]
    relative = ImageRecord.from_index_entry(entry(url="topic-x/img/"), base)
    assert relative.url == BASE + "topic-x/img/"
    # another host: the entry's path under the index is used instead
    elsewhere = ImageRecord.from_index_entry(entry(url="http://evil.example.net/x/"), base)
    assert elsewhere.url == BASE + entry()["path"]
    for url in ("http://evil.example.net/x/", "../../etc/", BASE + "sub/img/?q=1", "file:///etc/",
                "HTTPS://images.example.org:8011/sub/x/"):
        with pytest.raises(EntryError, match="not under the index's base"):
            ImageRecord.from_index_entry(entry(url=url, path=None), BASE + "sub/index.json")
    with pytest.raises(EntryError, match="url path segment"):
        ImageRecord.from_index_entry(entry(url=BASE + "topic-x/%2e%2e/", path=None), base)
    # unconfined (an index shown as it is): the URL is kept, the names are still checked
    assert ImageRecord.from_index_entry(entry(url="http://elsewhere/x")).url == "http://elsewhere/x/"


def test_read_index_from_a_tree_a_file_a_base_url_and_an_index_url(tree):
    make_image(tree, "b", 1)
    make_image(tree, "b", 2)
    TreeIndex(tree, BASE).regenerate()
    index = json.loads((tree / "index.json").read_text())
    with serve_dir(tree) as base:
        for where in (str(tree), str(tree / "index.json"), base, base + "/", base + "/index.json"):
            doc = read_index(where)
            assert doc.entries() == index["images"] and doc.skipped == () and doc.generated == index["generated"]
        served = read_index(base, confine=True)
        assert [r.url for r in served.images] == [f"{base}/{e['path']}" for e in index["images"]]
    on_disk = read_index(tree, confine=True)  # the NFS tree: files come from the tree itself
    assert [unquote(r.url) for r in on_disk.images] == [unquote((tree / e["path"]).as_uri()) + "/"
                                                        for e in index["images"]]


def test_read_index_leaves_out_bad_entries_and_refuses_what_is_no_index(tree):
    good = entry()
    (tree / "index.json").write_text(json.dumps({"schema": 1, "images": [good, entry(name=".."), "x"]}))
    doc = read_index(tree)
    assert [r.name for r in doc.images] == [good["name"]]
    assert len(doc.skipped) == 2 and "images[1]" in doc.skipped[0] and "images[2]" in doc.skipped[1]
    for text, words in (("{not json", "is not JSON"), ("[]", "'images' list"), ('{"schema": 2, "images": []}',
                                                                                "schema")):
        (tree / "index.json").write_text(text)
        with pytest.raises(IndexUnreadable, match=words):
            read_index(tree)
    with pytest.raises(IndexUnreadable, match="cannot read the index"):
        read_index(tree / "missing.json")


def test_the_line_by_line_parse_gives_what_one_parse_gives(tree):
    for i in range(3):
        make_image(tree, "b", i)
    TreeIndex(tree, BASE).regenerate()
    text = (tree / "index.json").read_text()
    assert decode(text) == json.loads(text)
    # the same shape with a line that is not one whole value: the whole text is parsed instead
    lines = text.split("\n")
    lines[1] = lines[1][:-1] + ', {"x": 1},'
    assert decode("\n".join(lines)) == json.loads("\n".join(lines)) and len(decode("\n".join(lines))["images"]) == 4
    lines[1] = lines[1][:-1]  # no comma: not JSON at all
    with pytest.raises(ValueError):
        decode("\n".join(lines))
    assert decode('{"schema": 1, "images": []}') == {"schema": 1, "images": []}
    assert parse_index({"schema": 1, "images": []}).images == ()


def test_load_image_applies_the_completeness_rule(tree):
    img = make_image(tree, "b", 1)
    assert is_published(img) and [r.name for r in branch_images(tree / "b")] == [img.name]
    (img / "config").unlink()
    with pytest.raises(IncompleteImage, match="config is missing"):
        load_image(img)
    assert not is_published(img) and branch_images(tree / "b") == []
    other = make_image(tree, "b", 2)
    with open(other / "vmlinuz", "ab") as f:
        f.write(b"still copying")
    with pytest.raises(IncompleteImage, match="vmlinuz is .* bytes, the manifest says"):
        load_image(other)
    os.rename(other, tree / "b" / "renamed")
    with pytest.raises(IncompleteImage, match="differs from the directory name"):
        load_image(tree / "b" / "renamed")
    assert branch_images(tree / "no-such-branch") == []


def test_one_time_format():
    assert iso_utc(0) == "1970-01-01T00:00:00Z"
    assert parse_iso_utc(iso_utc(1_700_000_000)).timestamp() == 1_700_000_000
    assert parse_iso_utc("yesterday") is None and parse_iso_utc(None) is None


def test_farm_step_takes_an_image_from_its_tree_or_its_branch_index(tree):
    from buildbot_kernel.farm.standalone import UsageError, fetch_entry

    img = make_image(tree, "b", 1)
    TreeIndex(tree, BASE).regenerate()
    local = fetch_entry(f"{BASE}b/{img.name}", BASE, tree)  # our own tree: read from disk, checked
    assert local["url"] == f"{BASE}b/{img.name}/" and local["name"] == img.name and "vmlinuz" in local["files"]
    with serve_dir(tree) as base:
        remote = fetch_entry(f"{base}/b/{img.name}/")  # another server: its branch index lists it
        assert {**remote, "url": local["url"]} == local and remote["url"] == f"{base}/b/{img.name}/"
        with pytest.raises(UsageError, match="not in .*/b/index.json"):
            fetch_entry(f"{base}/b/not-there/")
    (img / "System.map").unlink()
    with pytest.raises(UsageError, match="not a complete image: System.map is missing"):
        fetch_entry(f"{BASE}b/{img.name}/", BASE, tree)
