"""Lookup by commit: full sha, unique prefix, ambiguous prefix, several images of one commit."""

import json

import pytest

from buildbot_kernel.imagetree.index import TreeIndex
from buildbot_kernel.imagetree.indexfile import IndexUnreadable, index_location, read_index
from buildbot_kernel.imagetree.lookup import (
    Ambiguous,
    BadPrefix,
    NotFound,
    ShaLookup,
)
from buildbot_kernel.imagetree.testing import make_image

SHA_A = "abc1230000000000000000000000000000000001"
SHA_B = "abc1240000000000000000000000000000000002"
SHA_C = "ffff000000000000000000000000000000000003"


def entries():
    return [
        {"sha": SHA_A, "name": "a-next", "branch": "next", "build": "x86_64"},
        {"sha": SHA_B, "name": "b", "branch": "next", "build": "x86_64"},
        {"sha": SHA_A, "name": "a-fixes", "branch": "fixes", "build": "x86_64"},
        {"sha": SHA_C, "name": "c", "branch": "fixes", "build": "arm64"},
    ]


def test_full_sha_and_unique_prefix():
    lk = ShaLookup(entries())
    assert lk.find(SHA_C) == (SHA_C, [entries()[3]])
    assert lk.find("FFFF0")[0] == SHA_C  # case does not matter
    sha, found = lk.find("abc123")
    assert sha == SHA_A and [e["name"] for e in found] == ["a-next", "a-fixes"]  # index order kept


def test_filters_narrow_the_images_of_a_commit():
    lk = ShaLookup(entries())
    assert [e["name"] for e in lk.find(SHA_A, branch="fixes")[1]] == ["a-fixes"]
    with pytest.raises(NotFound, match="none with build=arm64"):
        lk.find(SHA_A, build="arm64")


def test_ambiguous_prefix_lists_the_matches():
    with pytest.raises(Ambiguous) as e:
        ShaLookup(entries()).find("abc12")
    assert [m["sha"] for m in e.value.matches] == [SHA_A, SHA_B]
    assert e.value.matches[0]["names"] == ["a-fixes", "a-next"]
    assert SHA_A in str(e.value) and SHA_B in str(e.value)


@pytest.mark.parametrize("bad", ["abc", "xyz12345", "", "a" * 65])
def test_bad_prefix(bad):
    with pytest.raises(BadPrefix, match="hex digits"):
        ShaLookup(entries()).find(bad)


def test_not_found():
    with pytest.raises(NotFound):
        ShaLookup(entries()).find("0123456")
    with pytest.raises(NotFound):
        ShaLookup([]).find("0123456")


def test_lookup_over_a_generated_index(tmp_path):
    img = make_image(tmp_path, "b", 7)
    TreeIndex(tmp_path, "http://h/").regenerate()
    sha = json.loads((img / "metadata.json").read_text())["sha"]
    doc = read_index(str(tmp_path))
    found_sha, found = ShaLookup(doc.entries()).find(sha[:8])
    assert found_sha == sha and found[0]["url"] == f"http://h/b/{img.name}/"


def test_index_location_and_load_errors(tmp_path):
    assert index_location("http://h/images/") == "http://h/images/index.json"
    assert index_location("http://h/x.json") == "http://h/x.json"
    assert index_location(str(tmp_path)) == str(tmp_path / "index.json")
    with pytest.raises(IndexUnreadable, match="cannot read the index"):
        read_index(str(tmp_path))
    (tmp_path / "index.json").write_text("[]")
    with pytest.raises(IndexUnreadable, match="'images' list"):
        read_index(str(tmp_path))


def test_malformed_entries_of_a_hostile_index_are_ignored_not_a_traceback():
    from buildbot_kernel.imagetree.lookup import ShaLookup

    good = {"sha": "ab" * 20, "name": "img", "url": "http://x/b/img/"}
    lookup = ShaLookup([good, {"name": "no sha"}, ["not", "an", "object"], {"sha": 42}, {"sha": "ab" * 20,
                                                                                           "name": ["x"]}])
    assert lookup.find("abab") == ("ab" * 20, [good])
