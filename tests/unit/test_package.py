"""The image directory contract: manifest, verification and the atomic publish rename."""

import hashlib
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildbot_kernel.digest import sha256_file
from buildbot_kernel.imagetree import package
from buildbot_kernel.imagetree.package import (
    CorruptImage,
    ImageExists,
    parse_sums,
    publish,
    staging_dir,
    verify_image_dir,
    write_manifest,
)
from buildbot_kernel.imagetree.testing import image_fields, make_image, write_payload


def staged(root, branch="drm-intel-next", i=1, **kw):
    fields = image_fields(branch, i, **kw)
    d = staging_dir(root)
    write_payload(d, seed=fields["sha"])
    return d, fields


def test_sha256_file_matches_hashlib(tmp_path):
    p = tmp_path / "f"
    data = os.urandom(3 * (1 << 20) + 17)  # more than one read chunk
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_write_manifest_writes_both_manifests(tmp_path):
    d, fields = staged(tmp_path)
    (d / "linux-image_1.deb").write_bytes(b"deb")
    meta = write_manifest(d, fields)
    assert meta["schema"] == 1
    assert set(meta["files"]) == {"vmlinuz", "config", "System.map", "modules.tar.xz", "linux-image_1.deb"}
    assert meta["files"]["linux-image_1.deb"] == {"size": 3, "sha256": hashlib.sha256(b"deb").hexdigest()}
    assert meta["compiler"] == "gcc (fixture)"  # extra fields pass through
    assert json.loads((d / "metadata.json").read_text()) == meta
    sums = (d / "SHA256SUMS").read_text().splitlines()
    assert f"{hashlib.sha256(b'deb').hexdigest()}  linux-image_1.deb" in sums
    assert len(sums) == 5
    assert verify_image_dir(d) == []


@pytest.mark.parametrize("field", package.REQUIRED_FIELDS)
def test_missing_field_is_named(tmp_path, field):
    d, fields = staged(tmp_path)
    del fields[field]
    with pytest.raises(ValueError, match=f"'{field}'"):
        write_manifest(d, fields)
    assert not (d / "metadata.json").exists()


@pytest.mark.parametrize("field,value,says", [
    ("sha", "abc123", "full lowercase hex"),
    ("commit_date", "yesterday", "ISO 8601"),
    ("build_date", "2024-01-01T00:00:00", "time zone"),
    ("kernelrelease", "6.1.0-other", "must be equal"),
])
def test_malformed_field_is_explained(tmp_path, field, value, says):
    d, fields = staged(tmp_path)
    fields[field] = value
    with pytest.raises(ValueError, match=says):
        write_manifest(d, fields)


def test_verify_finds_each_kind_of_damage(tmp_path):
    d, fields = staged(tmp_path)
    write_manifest(d, fields)
    (d / "config").write_bytes(b"changed!")
    (d / "extra").write_bytes(b"x")
    problems = verify_image_dir(d)
    assert any("'config' is 8 bytes" in p for p in problems)
    assert any("'extra' is in the directory but not in the manifest" in p for p in problems)
    (d / "extra").unlink()
    (d / "vmlinuz").write_bytes(b"y" * 64)  # same size, other content
    (d / "config").unlink()
    problems = verify_image_dir(d)
    assert any("'vmlinuz' does not match its sha256" in p for p in problems)
    assert any("'config' is in the manifest but missing" in p for p in problems)


def test_verify_sums_disagreeing_with_metadata(tmp_path):
    d, fields = staged(tmp_path)
    write_manifest(d, fields)
    (d / "SHA256SUMS").write_text("0" * 64 + "  vmlinuz\n")
    problems = verify_image_dir(d)
    assert any("disagree on 'config'" in p for p in problems)
    (d / "SHA256SUMS").write_text("garbage\n")
    assert "not '<sha256>  <file>'" in verify_image_dir(d)[0]
    (d / "metadata.json").write_text("{")
    assert "not valid JSON" in verify_image_dir(d)[0]


def test_publish_renames_into_the_tree(tmp_path):
    d, fields = staged(tmp_path, branch="topic/fix")
    write_manifest(d, fields)
    target = publish(d, tmp_path, "topic/fix", fields["name"])
    assert target == tmp_path / "topic-fix" / fields["name"]
    assert not d.exists()
    assert verify_image_dir(target) == []
    assert oct(target.stat().st_mode & 0o777) == "0o755"


def test_publish_refuses_existing_and_corrupt(tmp_path):
    first = make_image(tmp_path, "b", 1)
    d, fields = staged(tmp_path, branch="b", i=1)
    write_manifest(d, fields)
    with pytest.raises(ImageExists):
        publish(d, tmp_path, "b", fields["name"])
    assert verify_image_dir(first) == []
    (d / "vmlinuz").write_bytes(b"short")
    with pytest.raises(CorruptImage) as e:
        publish(d, tmp_path, "b", fields["name"] + "x")
    assert any("vmlinuz" in p for p in e.value.problems)
    assert d.is_dir()  # left for inspection


def test_publish_checks_the_name(tmp_path):
    d, fields = staged(tmp_path)
    write_manifest(d, fields)
    with pytest.raises(CorruptImage, match="differs from the publish name"):
        publish(d, tmp_path, "drm-intel-next", "something-else")


def test_corrupt_image_without_a_directory():
    e = CorruptImage(["upload incomplete"])
    assert e.problems == ["upload incomplete"] and str(e) == "upload incomplete"


@pytest.mark.parametrize("length", [0, 1, 4095, 65536, 200_000])
def test_read_bytes_reads_the_whole_file_whatever_the_size_hint(tmp_path, length):
    """The hint is a stat taken earlier: the file may have grown or shrunk since."""
    from buildbot_kernel.imagetree.package import read_bytes

    data = os.urandom(length)
    (tmp_path / "f").write_bytes(data)
    for hint in {0, max(length - 1, 0), length, length + 7, 1 << 16}:
        assert read_bytes(str(tmp_path / "f"), None, hint) == data


_HASH = "a" * 64
_SUMS_PIECES = [f"{_HASH}  vmlinuz", f"{_HASH} *config", "", "   ", "\t", "junk", f" {_HASH}  lead", f"{_HASH}  x y",
                f"{_HASH}  a\x85", f"{_HASH}  b\r", f"{_HASH}  c\u2028d", f"{_HASH}  e\x1c", f"{'b' * 64}  dup",
                f"{'c' * 64}  dup", "\x0c", "\u3000"]


@given(st.lists(st.sampled_from(_SUMS_PIECES), max_size=6), st.sampled_from(["\n", "\r\n", "\n\n"]),
       st.sampled_from(["", "\n", "\r\n", "\x85"]))
def test_parse_sums_reads_every_text_as_line_by_line_parsing_does(pieces, sep, end):
    """parse_sums reads all lines with one regex call when it safely can; the answer (or the error
    naming the line) must be what reading line by line gives, whatever the line breaks."""
    text = sep.join(pieces) + end

    def line_by_line():
        out = {}
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                m = package._SUMS_LINE.match(line)
                if not m:
                    raise ValueError(f"line {i}")
                out[m.group(2)] = m.group(1)
        return out

    def outcome(fn):
        try:
            return fn()
        except ValueError as e:
            return ("error", str(e).split(" is not")[0].split()[-1])

    assert outcome(lambda: parse_sums(text)) == outcome(line_by_line)
