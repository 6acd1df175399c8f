"""Path resolution and Range parsing of the image server, case by case."""

import os

import pytest

from buildbot_kernel.imagetree.httpfiles import Refused, content_type, parse_range, resolve


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
    for segs in (["..", "outside"], ["b", "..", "..", "outside"], ["/etc"], ["b", "a/b"], [".trash"],
                 ["b", "link-out"], ["a\\..\\b"], ["x\0"]):
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
