"""A trailing newline passed every check written as ``re.compile(r"^...$")``.

Python's ``$`` also matches before a final ``"\\n"``: ``re.match(r"^[0-9a-f]{40}$", sha + "\\n")``
matches.  A metadata.json whose ``sha`` ended in a newline was published and listed, an index.json entry
whose ``sha`` or ``sha256`` did was read by every bisect and ``images find``, a heads file whose head did
was taken as the branch head, and a test name, bisect id or image name with one was taken as plain.
Every such check now ends in ``\\Z``.  Each case: the valid value passes, the same plus ``"\\n"`` does not.
"""

from __future__ import annotations

import pytest

from buildbot_kernel import commitlink, naming
from buildbot_kernel.bisect.engine import BisectState
from buildbot_kernel.bisect.records import BisectDir
from buildbot_kernel.imagetree import branchorder, results, snippets
from buildbot_kernel.imagetree.package import value_problems
from buildbot_kernel.imagetree.record import EntryError, ImageRecord
from buildbot_kernel.imagetree.testing import image_fields

SHA = "a" * 40


def _entry(**over) -> dict:
    f = image_fields("drm-intel-fixes", 1, sha=SHA)
    entry = {"name": f["name"], "sha": SHA, "build": "x86_64", "branch": "drm-intel-fixes",
             "url": f"drm-intel-fixes/{f['name']}/", "files": {"vmlinuz": {"size": 1, "sha256": "b" * 64}}}
    entry.update(over)
    return entry


def metadata_ok(sha: str) -> bool:
    return not value_problems({**image_fields("b", 1), "sha": sha})


def entry_ok(**over) -> bool:
    try:
        ImageRecord.from_index_entry(_entry(**over))
    except EntryError:
        return False
    return True


def head_ok(sha: str) -> bool:
    return branchorder.parse_entry({"branch": "b", "head": sha}) is not None


def verdict_ok(sha: str) -> bool:
    state = BisectState(repo=None, bad="b" * 40, goods=["c" * 40])
    try:
        state.record(sha, "good")
    except ValueError:
        return False
    return True


def bisect_id_ok(ident: str) -> bool:
    try:
        BisectDir("/nonexistent-state", ident)
    except ValueError:
        return False
    return True


def image_name_ok(name: str) -> bool:
    try:
        naming.parse_image_name(name)
    except naming.NameError_:
        return False
    return True


def snippet_root_ok(root: str) -> bool:
    try:
        snippets.snippet_vars(root, "http://images.example/kernels/")
    except ValueError:
        return False
    return True


NAME = image_fields("drm-intel-fixes", 1)["name"]
CASES = {
    "metadata.json sha": (metadata_ok, SHA),
    "index entry sha": (lambda v: entry_ok(sha=v), SHA),
    "index entry sha256": (lambda v: entry_ok(files={"vmlinuz": {"size": 1, "sha256": v}}), "b" * 64),
    "heads.json head": (head_ok, SHA),
    "bisect verdict sha": (verdict_ok, SHA),
    "bisect id": (bisect_id_ok, "20261201-040000-bs7"),
    "test name": (results.valid_name, "boot"),
    "image name": (image_name_ok, NAME),
    "commit link sha": (lambda v: commitlink.commit_url("https://git.example/c/{sha}", v) is not None, SHA),
    "snippet tree root": (snippet_root_ok, "/srv/kernels"),
}


@pytest.mark.parametrize("case", CASES)
def test_the_value_passes_and_the_value_with_a_trailing_newline_does_not(case):
    check, valid = CASES[case]
    assert check(valid), f"{case}: the valid value {valid!r} is refused"
    assert not check(valid + "\n"), f"{case}: {valid + chr(10)!r} passes"
