"""Image names: the kernel's own release string, so ``uname -r`` on a test machine names the build.

The contract (DESIGN section 5) is ``<kernelversion><localversion files><CONFIG_LOCALVERSION>[+]`` with
``CONFIG_LOCALVERSION = "-<branch>_<sha6>_<yyyymmdd>_"``.  Kbuild's ``setlocalversion`` appends ``+``
when the ``LOCALVERSION`` environment variable is unset and HEAD is not exactly at an annotated tag, so
the builder must leave ``LOCALVERSION`` unset and this module must predict the ``+`` the same way.
The date is the committer date in UTC, so rebuilding a commit reproduces its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

SHA_CHARS = 6
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
# <kernelversion><localversion files>-<branch>_<sha6>_<yyyymmdd>_[+]
_NAME_RE = re.compile(
    r"^(?P<prefix>.+?)-(?P<branch>[A-Za-z0-9._+-]+?)_(?P<sha6>[0-9a-f]{6})_(?P<date>\d{8})_(?P<plus>\+?)$"
)


class NameError_(ValueError):
    """A string that is not an image name of ours."""


def safe_branch(branch: str) -> str:
    """Branch names become one path component: ``/`` and anything a shell or URL trips on -> ``-``."""
    if not branch or not branch.strip():
        raise ValueError("branch name is empty")
    return _UNSAFE.sub("-", branch.strip())


def commit_day(committer_timestamp: int | float) -> str:
    """``yyyymmdd`` of a commit's committer time in UTC (not the author's, not local time)."""
    return datetime.fromtimestamp(committer_timestamp, tz=UTC).strftime("%Y%m%d")


def config_localversion(branch: str, sha: str, committer_timestamp: int | float) -> str:
    """The value the builder writes into ``CONFIG_LOCALVERSION``."""
    if len(sha) < SHA_CHARS or not re.fullmatch(r"[0-9a-fA-F]+", sha):
        raise ValueError(f"sha {sha!r} is not a hexadecimal commit id of at least {SHA_CHARS} digits")
    return f"-{safe_branch(branch)}_{sha[:SHA_CHARS].lower()}_{commit_day(committer_timestamp)}_"


def image_name(
    kernelversion: str,
    branch: str,
    sha: str,
    committer_timestamp: int | float,
    *,
    at_release_tag: bool,
    localversion_files: str = "",
) -> str:
    """Predict ``make kernelrelease`` for this commit; the builder checks Kbuild agrees before publishing."""
    kernelversion = kernelversion.strip()
    if not kernelversion:
        raise ValueError("kernelversion is empty (make -s kernelversion printed nothing)")
    plus = "" if at_release_tag else "+"
    return f"{kernelversion}{localversion_files.strip()}" + config_localversion(
        branch, sha, committer_timestamp
    ) + plus


@dataclass(frozen=True)
class ParsedName:
    """What can be read back from a name alone (the rest is in metadata.json)."""

    kernel: str  # kernelversion + localversion files
    branch: str  # filesystem-safe branch
    sha6: str
    day: str
    at_release_tag: bool


def parse_image_name(name: str) -> ParsedName:
    """Split a name like ``3.10.0-rc7-drm-intel-fixes_18097b_20130718_+``.

    Ambiguity note: kernel versions contain ``-`` (``3.10.0-rc7``) and so do branches, so the split is
    taken at the first ``-`` whose remainder parses; versions never contain ``_`` so the tail is exact.
    """
    m = _NAME_RE.match(name)
    if not m:
        raise NameError_(f"{name!r} is not an image name (<kernelversion>-<branch>_<sha6>_<yyyymmdd>_[+])")
    prefix, branch = m.group("prefix"), m.group("branch")
    # the lazy prefix stops at the first '-'; a version like 3.10.0-rc7 keeps its -rcN part
    rc = re.match(r"^(rc\d+)-(.+)$", branch)
    if rc:
        prefix, branch = f"{prefix}-{rc.group(1)}", rc.group(2)
    return ParsedName(
        kernel=prefix,
        branch=branch,
        sha6=m.group("sha6"),
        day=m.group("date"),
        at_release_tag=not m.group("plus"),
    )
