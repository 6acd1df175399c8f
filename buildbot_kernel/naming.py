"""Image names: the kernel's own release string, so ``uname -r`` on a test machine names the build.

The contract (docs/index-format.md, "Image names"):
``<kernelversion><localversion files><CONFIG_LOCALVERSION>[+]`` with
``CONFIG_LOCALVERSION = "-<branch>_<sha6>_<yyyymmdd>_"``.  Kbuild's ``setlocalversion`` appends ``+``
when the ``LOCALVERSION`` environment variable is unset and HEAD is not exactly at an annotated tag, so
the builder must leave ``LOCALVERSION`` unset and this module must predict the ``+`` the same way.
The date is the committer date in UTC, so rebuilding a commit reproduces its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from buildbot_kernel.errors import BuildbotKernelError

SHA_CHARS = 6
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
# <kernelversion><localversion files>-<branch>_<sha6>_<yyyymmdd>_[+]
_NAME_RE = re.compile(
    r"^(?P<prefix>.+?)-(?P<branch>[A-Za-z0-9._+-]+?)_(?P<sha6>[0-9a-f]{6})_(?P<date>\d{8})_(?P<plus>\+?)\Z"
)


MAX_COMPONENT = 200  # well under NAME_MAX (255 bytes), with room for the ".<name>.<random>" temp files
# what an image name adds to the kernel release and the branch: "-", "_<sha6>_<yyyymmdd>_" and "+"
NAME_OVERHEAD = len(f"-_{'0' * SHA_CHARS}_yyyymmdd_+")
# A watched branch's name, in characters (safe_branch keeps one per character): the kernel release string
# is known only once a commit is checked out, so the bound leaves it 200 - 100 - 19 = 81 characters, ample
# for "6.10.0-rc7" and localversion files such as "-rt12".
MAX_BRANCH_CHARS = 100
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-]+\Z")
CONTROL = re.compile("[\x00-\x1f\x7f]")  # NUL and the other control characters (one C-level search)


class NameError_(BuildbotKernelError, ValueError):
    """A string that is not an image name of ours."""


def component_problem(text: object, what: str = "name") -> str:
    """Why ``text`` is not ONE safe path component (an image, branch directory or file name), or "".

    Everything that names a file or directory from outside (an index entry, a metadata file, a kernel
    tree's localversion) goes through here before it is joined to a path: no separator, no ``.``/``..``,
    nothing absolute, no NUL or control character, no leading dot (hidden, and our temp files) or dash
    (an option to tar, cp, sha256sum), and a length every filesystem takes.
    """
    if not isinstance(text, str):
        return f"{what} is {type(text).__name__}, expected a string"
    if not text:
        return f"{what} is empty"
    if "/" in text or "\\" in text:
        return f"{what} {text!r} holds a path separator; expected one path component"
    if CONTROL.search(text):
        return f"{what} {text!r} holds a NUL or control character"
    if text.startswith("."):
        return f"{what} {text!r} starts with '.' (., .. and hidden names are never images or files of one)"
    if text.startswith("-"):
        return f"{what} {text!r} starts with '-' (it would read as a command-line option)"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_COMPONENT:
        return f"{what} is {len(text)} characters long; at most {MAX_COMPONENT} bytes"
    return ""


def image_name_problem(name: object) -> str:
    """Why ``name`` cannot be an image name we publish, or "": one safe component of the characters
    :func:`safe_branch` keeps (the kernel release must work in a URL, a shell and ``uname -r``)."""
    problem = component_problem(name, "image name")
    if problem:
        return problem
    if not _SAFE_NAME.match(name):
        bad = sorted({c for c in name if not _SAFE_NAME.match(c)})
        return f"image name {name!r} holds {''.join(bad)!r}; expected only letters, digits and . _ + -"
    return ""


def branch_problem(branch: object) -> str:
    """Why git would refuse ``branch`` as a branch name, or "" (``git check-ref-format --branch`` rules).

    Checked in Python so settings and index entries are refused before any git command sees them.
    """
    if not isinstance(branch, str):
        return f"branch is {type(branch).__name__}, expected a string"
    if not branch:
        return "branch name is empty"
    if branch.startswith("-"):
        return f"branch {branch!r} starts with '-'"
    if branch == "@":
        return "branch '@' is not allowed (git reads it as HEAD)"
    for c in branch:
        if ord(c) < 32 or ord(c) == 127 or c in " ~^:?*[\\":
            return f"branch {branch!r} holds {c!r}; git refuses spaces, control characters and ~ ^ : ? * [ \\"
    if ".." in branch or "@{" in branch:
        return f"branch {branch!r} holds '..' or '@{{'; git refuses both"
    if branch.startswith("/") or branch.endswith("/") or "//" in branch:
        return f"branch {branch!r} starts or ends with '/' or holds '//'"
    if branch.endswith("."):
        return f"branch {branch!r} ends with '.'"
    for part in branch.split("/"):
        if part.startswith("."):
            return f"branch {branch!r}: the component {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"branch {branch!r}: the component {part!r} ends with '.lock'"
    if len(branch.encode("utf-8", "surrogatepass")) > MAX_COMPONENT:
        return f"branch {branch!r} is longer than {MAX_COMPONENT} bytes"
    return ""


def safe_branch(branch: str) -> str:
    """Branch names become one path component: ``/`` and anything a shell or URL trips on -> ``-``."""
    if not branch or not branch.strip():
        raise ValueError("branch name is empty")
    return _UNSAFE.sub("-", branch.strip())


def commit_day(committer_timestamp: int | float) -> str:
    """``yyyymmdd`` of a commit's committer time in UTC (not the author's, not local time).

    git takes any number as a commit's date (``committer A <a@b> 253402300800 +0000`` is year 10000), and
    anyone who can push can make one: a date without eight digits is a NameError_, not a crash."""
    try:
        day = datetime.fromtimestamp(committer_timestamp, tz=UTC)
    except (ValueError, OverflowError, OSError):
        day = None
    if day is None or day.year < 1000:
        raise NameError_(f"committer date {committer_timestamp} is not in the years 1000 to 9999, and the image "
                         "name holds the date as yyyymmdd")
    return day.strftime("%Y%m%d")


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
    release = f"{kernelversion}{localversion_files.strip()}"
    name = release + config_localversion(branch, sha, committer_timestamp) + plus
    if len(name) > MAX_COMPONENT:  # the tree's readers refuse a longer one: fail before the build, not after
        raise NameError_(f"the image name would be {len(name)} characters long, over the {MAX_COMPONENT} an image "
                         f"directory may have (kernel release {len(release)}, branch {len(safe_branch(branch))}, "
                         f"{NAME_OVERHEAD} for -_<sha6>_<yyyymmdd>_+); shorten the branch name or the tree's "
                         f"localversion files: {name[:60]!r}...")
    return name


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
    rc = re.match(r"^(rc\d+)-(.+)\Z", branch)
    if rc:
        prefix, branch = f"{prefix}-{rc.group(1)}", rc.group(2)
    return ParsedName(
        kernel=prefix,
        branch=branch,
        sha6=m.group("sha6"),
        day=m.group("date"),
        at_release_tag=not m.group("plus"),
    )
