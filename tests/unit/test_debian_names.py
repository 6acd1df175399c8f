"""Debian package names and versions for image names (buildbot_kernel/formats/debian.py)."""

from __future__ import annotations

import subprocess

from hypothesis import given
from hypothesis import strategies as st

from buildbot_kernel.formats import debian, get

ARCHES = get("deb").data["arch"]
NAME = "3.10.0-rc7-drm-intel-fixes_18097b_20130718_+"
# what naming.image_name_problem lets through: letters, digits and . _ + -
image_names = st.from_regex(r"\A[0-9][A-Za-z0-9._+-]{0,60}\Z")


def test_sanitized_name_and_version():
    assert debian.package_name(NAME) == "linux-image-3.10.0-rc7-drm-intel-fixes-18097b-20130718-+"
    assert debian.package_version(NAME) == "3.10.0.rc7.drm.intel.fixes.18097b.20130718.+-1"
    assert debian.package_name("6.1.0-Topic_GT") == "linux-image-6.1.0-topic-gt"
    assert debian.package_version("v6.1") == "0+v6.1-1"  # a version starts with a digit


@given(image_names)
def test_every_image_name_gives_a_valid_package_name_and_version(name):
    assert debian.PACKAGE_RE.match(debian.package_name(name))
    assert debian.VERSION_RE.match(debian.package_version(name))


def test_dpkg_accepts_them():
    for name in (NAME, "6.1.0-Topic_GT__x+", "6.9.0-rc1+"):
        version = debian.package_version(name)
        r = subprocess.run(["dpkg", "--validate-pkgname", debian.package_name(name)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        r = subprocess.run(["dpkg", "--validate-version", version], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_control_keeps_the_exact_image_name_in_the_description():
    text = debian.control(NAME, "x86_64", ARCHES)
    fields = dict(line.split(": ", 1) for line in text.splitlines() if not line.startswith(" "))
    assert fields["Package"] == debian.package_name(NAME) and fields["Architecture"] == "amd64"
    assert f"/boot/vmlinuz-{NAME} and /lib/modules/{NAME}/" in text


def test_unknown_arch_names_the_fix():
    try:
        debian.architecture("sparc", ARCHES)
    except ValueError as e:
        assert "'sparc'" in str(e) and "[arch] of buildbot_kernel/formats/deb.ini" in str(e)
    else:
        raise AssertionError("sparc has no Debian architecture in deb.ini")
    assert debian.architecture("arm64", ARCHES) == "arm64" and debian.architecture("aarch64", ARCHES) == "arm64"
