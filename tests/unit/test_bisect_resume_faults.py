"""A bisect that resumes after a master restart, when what it needs from outside is gone.

Before: a resumed bisect fetched its mirror first, and a remote that did not answer at the restart (the
lab's network still coming up) failed the start step; nothing then wrote its result, so the bisect showed
"running" for ever and its pinned images were never released.  Real git and real files here.
"""

from __future__ import annotations

import json
import shutil

import pytest

from buildbot_kernel.bisect import mirror, records, report
from buildbot_kernel.bisect.engine import BisectInputError
from tests.bisect.history import git, linear, make_history


def test_a_resumed_bisect_goes_on_with_its_mirror_when_the_remote_is_down(tmp_path):
    h = make_history(tmp_path / "remote", linear(5))
    state = tmp_path / "state"
    store = mirror.update_mirror(state, "drm-intel", h.path.as_uri())
    shutil.move(h.path, tmp_path / "remote-away")  # the remote does not answer
    with pytest.raises(BisectInputError, match="cannot fetch"):
        mirror.update_mirror(state, "drm-intel", h.path.as_uri())  # a new bisect is refused, naming it
    said: list[str] = []
    assert mirror.mirror_to_resume(state, "drm-intel", h.path.as_uri(), said.append) == store
    assert said[-1].startswith("cannot fetch") and said[-1].endswith("resuming with the mirror as it is")
    assert git(store, "rev-list", "--count", "--all").stdout.strip() == "5"  # the bisect's commits are there


def test_without_a_mirror_resuming_is_refused(tmp_path):
    with pytest.raises(BisectInputError, match="cannot fetch"):
        mirror.mirror_to_resume(tmp_path / "state", "drm-intel", (tmp_path / "nowhere").as_uri())


def test_a_bisect_that_cannot_resume_ends_aborted_with_its_steps_and_unpinned(tmp_path):
    bdir = records.BisectDir(tmp_path, "bisect-7")
    bdir.create({"target": "drm-tip", "good": ["a" * 40], "bad": "b" * 40})
    step = {"sha": "c" * 40, "verdict": "good", "image": "6.1.0-drm-tip_cccccc_20260101_+"}
    bdir.append_step(step)
    bdir.set_pins(["6.1.0-drm-tip_cccccc_20260101_+"])
    assert records.pinned_images(tmp_path) == {"6.1.0-drm-tip_cccccc_20260101_+"}
    bdir.end_unresumable("cannot resume: target: cannot fetch it")
    result = json.loads(bdir.file(records.RESULT).read_text())
    assert (result["status"], result["steps"], result["request"]["target"]) == (report.ABORTED, [step], "drm-tip")
    assert result["reason"] == "cannot resume: target: cannot fetch it" and result["started"]
    assert bdir.finished and records.pinned_images(tmp_path) == set()


def test_an_unreadable_request_still_ends_it(tmp_path):
    bdir = records.BisectDir(tmp_path, "bisect-8")
    bdir.create({"target": "drm-tip"})
    bdir.file(records.REQUEST).write_text("{torn")
    bdir.end_unresumable("cannot resume: request: not JSON")
    assert json.loads(bdir.file(records.RESULT).read_text())["request"] == {}
