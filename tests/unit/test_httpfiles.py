"""Path resolution and Range parsing of the image server, case by case."""

import os

import pytest

from buildbot_kernel.imagetree.httpfiles import (
    Entry,
    Refused,
    canonical_location,
    content_type,
    list_dir,
    not_modified,
    parse_range,
    resolve,
)


@pytest.mark.parametrize("header,expected", [
    (None, None),
    ("bytes=0-99", (0, 99)),
    ("bytes=100-", (100, 999)),
    ("bytes=-100", (900, 999)),
    ("bytes=-5000", (0, 999)),
    ("bytes=990-5000", (990, 999)),
    ("bytes=1000-", "unsatisfiable"),
    ("bytes=-0", "unsatisfiable"),
    ("bytes=5-1", None),  # invalid: ignored, whole file
    ("bytes=0-1,5-9", None),  # several ranges: whole file (allowed by RFC 9110)
    ("items=0-1", None),
    ("bytes=-", None),
    ("bytes=99999999999999999999999-", "unsatisfiable"),
    ("bytes=" + "9" * 5000 + "-", "unsatisfiable"),  # int() alone refuses over 4300 digits
    ("bytes=-" + "9" * 5000, (0, 999)),
    ("bytes=0-" + "9" * 5000, (0, 999)),
    ("bytes=" + "0" * 5000 + "7-8", (7, 8)),
    ("bytes=" + "9" * 30 + "-5", None),  # last < first: invalid, ignored
    ("BYTES=1-2", (1, 2)),
])
def test_parse_range(header, expected):
    assert parse_range(header, 1000) == expected


def test_parse_range_empty_file():
    assert parse_range("bytes=0-", 0) == "unsatisfiable"


def test_resolve_inside_and_outside(tmp_path):
    root = tmp_path / "root"
    (root / "b" / "img").mkdir(parents=True)
    (root / "b" / "img" / "vmlinuz").write_text("k")
    (tmp_path / "outside").write_text("x")
    os.symlink(tmp_path / "outside", root / "b" / "link-out")
    os.symlink(root / "b" / "img" / "vmlinuz", root / "b" / "link-in")
    r = str(root)
    assert resolve(r, ["b", "img", "vmlinuz"]) == str(root / "b" / "img" / "vmlinuz")
    assert resolve(r, ["", "b", "", "img", ""]) == str(root / "b" / "img")
    assert resolve(r, []) == r
    assert resolve(r, ["b", "link-in"]) == str(root / "b" / "img" / "vmlinuz")
    os.mkdir(root / ".state")
    (root / ".state" / "s").write_text("hidden")
    os.symlink(root / ".state" / "s", root / "b" / "link-hidden")
    for segs in (["b", "link-hidden"], ["..", "outside"], ["b", "..", "..", "outside"], ["/etc"], ["b", "a/b"],
                 [".trash"], ["b", "link-out"], ["a\\..\\b"], ["x\0"]):
        with pytest.raises(Refused):
            resolve(r, segs)


@pytest.mark.parametrize("name,ctype", [
    ("vmlinuz", "application/octet-stream"), ("System.map", "text/plain; charset=utf-8"),
    ("index.json", "application/json"), ("modules.tar.xz", "application/x-xz"),
    ("linux-image-6.1_amd64.deb", "application/vnd.debian.binary-package"),
    ("index.html", "text/html; charset=utf-8"), ("something.unknownext", "application/octet-stream"),
])
def test_content_type(name, ctype):
    assert content_type(name) == ctype


def test_list_dir_names_only_servable_entries(tmp_path):
    root = tmp_path / "root"
    d = root / "b"
    (d / "img").mkdir(parents=True)
    (d / "f").write_text("12345")
    (d / ".hidden").write_text("x")
    (root / ".incoming").mkdir()
    (tmp_path / "outside").write_text("secret")
    os.symlink(tmp_path / "outside", d / "out")
    os.symlink(tmp_path, d / "out-dir")
    os.symlink(root / ".incoming", d / "in-dot")
    os.symlink(tmp_path / "nowhere", d / "broken")
    os.symlink(d / "f", d / "in")
    os.mkfifo(d / "fifo")
    assert list_dir(str(root), str(d)) == [Entry("f", False, 5), Entry("img", True, None), Entry("in", False, 5)]


def test_canonical_location_is_on_host():
    assert canonical_location(["", "evil.com"]) == "/evil.com/"
    assert canonical_location(["a b", "c"]) == "/a%20b/c/"
    assert canonical_location([]) == "/"
    for segs in (["", "", "x"], ["\\x"], ["%2F"]):
        loc = canonical_location(segs)
        assert loc.startswith("/") and not loc.startswith("//") and "\\" not in loc


def test_not_modified_if_none_match_first():
    etag, mtime = '"40-1"', 1_700_000_000.5
    later, earlier = "Wed, 15 Nov 2023 00:00:00 GMT", "Thu, 01 Jan 1970 00:00:00 GMT"
    assert not_modified(etag, mtime, None, later)
    assert not not_modified(etag, mtime, None, earlier)
    assert not not_modified(etag, mtime, '"other"', later)  # If-None-Match present: it alone decides
    assert not_modified(etag, mtime, etag, earlier)
    assert not_modified(etag, mtime, 'W/"40-1"', None)
    assert not_modified(etag, mtime, '"a,b", "40-1"', None)
    assert not_modified(etag, mtime, "*", None)
    assert not not_modified(etag, mtime, None, "yesterday")
    assert not not_modified(etag, mtime, None, "Mon, 30 Nov 99999999999 06:14:09 GMT")
    assert not_modified(etag, mtime, None, "Wed, 15 Nov 2023 00:00:00 -0000")
