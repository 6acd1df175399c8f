"""An image's ``tests/`` replaced by a symlink: the tree root may be writable by others.

``write_result`` made ``tests/`` with ``mkdir(exist_ok=True)``, which accepts a symlink to a directory,
then chmod-ed it and wrote the result and its log through it: with ``b/img/tests -> ../../../outside``
a directory outside the tree became mode 0755 and got ``boot.json`` and ``boot.log``.  The image and its
``tests`` are now opened without following a symlink; such an entry is refused and left as it is, and the
image-test step fails saying so instead of losing the result in an exception.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from buildbot.process.buildstep import create_step_from_step_or_factory
from twisted.internet import defer
from twisted.trial import unittest as trial

from buildbot_kernel.bisect.tree_images import TreeImages
from buildbot_kernel.imagetree import results
from buildbot_kernel.imagetree.reserved import RefusedEntry
from buildbot_kernel.imagetree.testing import make_image
from buildbot_kernel.settings import Test
from buildbot_kernel.steps.image_test import LoopContext, RunImageTest

from .test_tree_reserved_dirs import contents, victim

BASE = "http://h/"


def tree_with_a_linked_tests_dir(tmp_path):
    """(image directory, the directory outside its ``tests`` leads to (mode 0700), that one's listing)."""
    img = make_image(tmp_path / "images", "b", 1)
    outside, before = victim(tmp_path, "outside")
    outside.chmod(0o700)
    (img / results.TESTS_DIR).symlink_to(os.path.relpath(outside, img))
    return img, outside, before


def test_write_result_refuses_a_symlinked_tests_directory_and_changes_nothing_outside(tmp_path):
    img, outside, before = tree_with_a_linked_tests_dir(tmp_path)
    with pytest.raises(RefusedEntry) as refused:
        results.write_result(img, "boot", {"result": "pass"}, "log", mode=0o644)
    assert refused.value.summary.startswith(f"{img / 'tests'} is a symbolic link to ")
    assert contents(outside) == before
    assert stat.S_IMODE(outside.stat().st_mode) == 0o700


def test_a_symlinked_branch_or_image_directory_is_refused_too(tmp_path):
    img = make_image(tmp_path / "images", "b", 1)
    outside, before = victim(tmp_path, "outside")
    (outside / "img").mkdir()
    before = contents(outside)
    (tmp_path / "images" / "c").symlink_to("../outside")
    with pytest.raises(RefusedEntry, match="images/c is a symbolic link"):
        results.write_result(tmp_path / "images" / "c" / "img", "boot", {"result": "pass"})
    (tmp_path / "images" / "b" / "linked").symlink_to("../../outside/img")
    with pytest.raises(RefusedEntry, match="b/linked is a symbolic link"):
        results.write_result(tmp_path / "images" / "b" / "linked", "boot", {"result": "pass"})
    assert contents(outside) == before
    results.write_result(img, "boot", {"result": "pass"})  # a real one is written as before
    assert results.read_results(img) == {"boot": {"result": "pass"}}


class TestTheImageTestStep(trial.TestCase):
    """The step's ``_store`` returns why the result was not stored, and logs it in full; ``run`` then
    ends the step as a failure with that reason (a lost result used to be an exception)."""

    @defer.inlineCallbacks
    def test_a_refused_result_is_a_reason_and_a_log(self):
        tmp = Path(tempfile.mkdtemp(prefix="bbk-results-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        img, outside, before = tree_with_a_linked_tests_dir(tmp)
        tree = TreeImages(img.parent.parent, BASE)
        [image] = tree.index().images
        test = Test(name="boot", command="true", mode="boot", timeout=60, branches=["b"], testers=["local"])
        ctx = LoopContext(tests={"boot": test}, images_root=str(img.parent.parent), state_dir="/nonexistent",
                          base_url=BASE, test_scheduler="t", bisect_scheduler="b", bisect_builder="b", builders={})
        step = create_step_from_step_or_factory(RunImageTest(ctx, test, "local"))  # as a build does
        step.master = SimpleNamespace()  # no image-tree service: the default modes
        logs = []
        step.addCompleteLog = lambda name, text: defer.succeed(logs.append((name, text)))
        problem = yield step._store(tree, image, "fail", "the test's output", {})
        assert problem.startswith(f"result not stored: {img / 'tests'} is a symbolic link to ")
        assert [name for name, _ in logs] == ["not stored"] and "rm " in logs[0][1]
        assert contents(outside) == before
