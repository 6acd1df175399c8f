"""The pure parts of the kernel fixture helper: fragment checking and the initramfs archive format."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import kbuild_helper
import pytest

FRAGMENT = """# comment
CONFIG_64BIT=y
CONFIG_LOCALVERSION="-x_abcdef_20260101_"
# CONFIG_LOCALVERSION_AUTO is not set
CONFIG_DUMMY=m
"""


def test_fragment_fully_applied_has_no_mismatches():
    config = 'CONFIG_64BIT=y\nCONFIG_DUMMY=m\nCONFIG_LOCALVERSION="-x_abcdef_20260101_"\n'
    config += "# CONFIG_LOCALVERSION_AUTO is not set\nCONFIG_OTHER=y\n"
    assert kbuild_helper.fragment_mismatches(FRAGMENT, config) == []


def test_dropped_and_changed_options_are_named():
    config = 'CONFIG_64BIT=y\nCONFIG_LOCALVERSION_AUTO=y\nCONFIG_LOCALVERSION=""\n'
    problems = kbuild_helper.fragment_mismatches(FRAGMENT, config)
    assert problems == [
        'CONFIG_LOCALVERSION: fragment wants "-x_abcdef_20260101_", .config has ""',
        "CONFIG_LOCALVERSION_AUTO: fragment wants not set, .config has y",
        "CONFIG_DUMMY: fragment wants m, .config has not set",
    ]


def test_shipped_fragment_parses_and_pins_the_naming_options():
    values = kbuild_helper.parse_config(kbuild_helper.SMALL_FRAGMENT.read_text())
    assert values["CONFIG_64BIT"] == "y"
    assert values["CONFIG_LOCALVERSION_AUTO"] is None  # would add -gSHA and break the image name
    assert values["CONFIG_KEXEC"] == "y" and values["CONFIG_RELOCATABLE"] == "y"
    assert "CONFIG_LOCALVERSION" not in values  # set per build, never in the shared fragment


def test_make_env_leaves_localversion_unset(monkeypatch):
    monkeypatch.setenv("LOCALVERSION", "")
    env = kbuild_helper.make_env()
    assert "LOCALVERSION" not in env
    assert env["KBUILD_BUILD_TIMESTAMP"] == kbuild_helper.BUILD_ENV["KBUILD_BUILD_TIMESTAMP"]


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio (Debian package cpio) reads the archive back")
@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox-static")
def test_initramfs_is_a_newc_archive_cpio_can_read(tmp_path):
    image = kbuild_helper.busybox_initramfs(
        tmp_path / "initrd.gz", "#!/bin/sh\necho hi\n", {"etc/motd": (0o100644, b"hello\n")}
    )
    listing = subprocess.run(
        ["cpio", "-t", "-v", "--quiet"],
        input=gzip.decompress(image.read_bytes()),
        capture_output=True,
        check=True,
    ).stdout.decode()
    names = [line.split()[-1] for line in listing.splitlines()]
    assert names[:2] == ["bin", "sbin"] and {"init", "bin/busybox", "etc/motd"} <= set(names)
    init_line = next(line for line in listing.splitlines() if line.endswith(" init"))
    assert init_line.startswith("-rwxr-xr-x") and " root " in init_line
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(
        ["cpio", "-i", "-d", "--quiet"], input=gzip.decompress(image.read_bytes()), cwd=out, check=True
    )
    assert (out / "etc" / "motd").read_bytes() == b"hello\n"
    assert (out / "init").read_text() == "#!/bin/sh\necho hi\n"


def test_localversion_that_cannot_be_a_file_name_is_refused_before_make(tmp_path):
    with pytest.raises(ValueError, match="localversion.*no spaces, quotes"):
        kbuild_helper.configure(tmp_path / "no-tree", tmp_path / "obj", '-a"b')
    assert not (tmp_path / "obj").exists()
