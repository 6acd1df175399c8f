"""Debian names for an image (docs/package-formats.md "deb"): the package name and version Debian accepts.

The image name is the kernel release (``6.1.0-drm-intel-next_18097b_20130718_+``); Debian package names
are ``[a-z0-9][a-z0-9+.-]+`` and versions ``[0-9][A-Za-z0-9.+~-]*`` (a '-' only before a revision), so
``_`` and uppercase must go from the package's name and version, while the files it installs keep the
image name exactly (``uname -r`` still names the image).  Two images whose names differ only in case or
in ``_`` versus ``-`` get the same package name: they are different builds of one package.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from buildbot_kernel.settings import Build

PREFIX = "linux-image-"
_NAME_BAD = re.compile(r"[^a-z0-9+.-]+")
_VERSION_BAD = re.compile(r"[^A-Za-z0-9.+~]+")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+\Z")
VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+~-]*-[A-Za-z0-9.+~]+\Z")
ARCH_RE = re.compile(r"^[a-z0-9][a-z0-9-]*\Z")
REVISION = "1"


def package_name(image: str) -> str:
    """``linux-image-<image name>`` lowercased, every run of forbidden characters one '-'."""
    return PREFIX + _NAME_BAD.sub("-", image.lower())


def package_version(image: str) -> str:
    """``<image name with forbidden characters as '.'>-1``; '-' in the name becomes '.' too, so the
    Debian revision is always the fixed last part and the upstream part starts with a digit."""
    upstream = _VERSION_BAD.sub(".", image).strip(".")
    if not upstream[:1].isdigit():
        upstream = "0+" + upstream
    return f"{upstream}-{REVISION}"


def architecture(arch: str, table: Mapping[str, str]) -> str:
    """The Debian architecture of a settings arch; ValueError (naming the key) when there is none."""
    deb = table.get(arch, "")
    if not deb or not ARCH_RE.match(deb):
        raise ValueError(f"packages: \"deb\" has no Debian architecture for arch {arch!r} "
                         f"(known: {', '.join(sorted(table))}); add it to [arch] of buildbot_kernel/formats/deb.ini")
    return deb


def control(image: str, arch: str, table: Mapping[str, str]) -> str:
    """The DEBIAN/control text; the description names the exact image so ``dpkg -s`` leads back to it."""
    one_line = re.sub(r"[\x00-\x1f\x7f]", "?", image)
    return "\n".join([
        f"Package: {package_name(image)}",
        f"Version: {package_version(image)}",
        f"Architecture: {architecture(arch, table)}",
        "Maintainer: buildbot-kernel <buildbot-kernel@localhost>",
        "Section: kernel",
        "Priority: optional",
        f"Description: Linux kernel {one_line}",
        f" Kernel release {one_line}: /boot/vmlinuz-{one_line} and /lib/modules/{one_line}/.",
    ])


def variables(image: str, build: Build, fmt) -> dict[str, str]:
    """The deb script's variables (deb.ini): the control text and the file name dpkg-deb writes."""
    table = fmt.data.get("arch", {})
    arch = architecture(build.arch, table)
    return {
        "BBK_DEB_CONTROL": control(image, build.arch, table),
        "BBK_DEB_FILE": f"{package_name(image)}_{package_version(image)}_{arch}.deb",
    }
