"""The pure parts of the bisect builder: the request check, the per-bisect records and pins, the texts,
and the image tree seen as an index."""

from __future__ import annotations

import json

import pytest

from buildbot_kernel.bisect import records, report
from buildbot_kernel.bisect.engine import BisectInputError
from buildbot_kernel.bisect.request import BisectRequest, Target, parse_request, split_revisions
from buildbot_kernel.bisect.tree_images import TreeImages
from buildbot_kernel.imagetree.testing import fake_sha, make_image
from buildbot_kernel.settings import Test

TARGETS = [Target("drm-tip", "drm-intel", "https://example.org/i915.git", "drm-tip", "x86_64"),
           Target("drm-intel:next", "drm-intel", "https://example.org/i915.git", "next", "x86_64")]
BUILDS = ["x86_64", "arm64"]
GOOD = {"target": "drm-tip", "good": "v6.8 v6.7", "bad": "drm-tip", "command": "true"}
TESTS = [Test(name="proc-version", command="grep -q Linux /proc/version", mode="test", timeout=30)]


def parse(**over):
    return parse_request({**GOOD, **over}, TARGETS, BUILDS, ["skl-1"], TESTS)


def test_a_good_request_gets_the_defaults():
    r = parse()
    assert r.good == ("v6.8", "v6.7") and r.bad == "drm-tip" and r.branch == "drm-tip"
    assert (r.tester, r.mode, r.build_missing, r.build_config, r.max_steps) == ("local", "boot", True, "x86_64", 0)
    assert BisectRequest.from_json(json.loads(json.dumps(r.to_json()))) == r


def test_several_good_revisions_by_space_comma_or_newline():
    assert split_revisions("a b,c\nd  ,, e") == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("over, field, says", [
    ({"target": "drm-next"}, "target", "drm-tip, drm-intel:next"),
    ({"good": "  "}, "good", "at least one"),
    ({"bad": ""}, "bad", "required"),
    ({"bad": "a b"}, "bad", "exactly one"),
    ({"tester": "hsw-2"}, "tester", "skl-1"),
    ({"command": ""}, "test", "proc-version"),
    ({"command": "", "test": "nope"}, "test", "proc-version"),
    ({"test": "proc-version"}, "command", "not both"),
    ({"mode": "fast"}, "mode", "'boot'"),
    ({"build_config": "riscv"}, "build_config", "x86_64, arm64"),
    ({"build_config": "arm64"}, "build_config", "build_missing off"),
    ({"build_missing": "maybe"}, "build_missing", "true or false"),
    ({"max_steps": "-1"}, "max_steps", "whole number"),
])
def test_each_bad_field_is_named(over, field, says):
    with pytest.raises(BisectInputError) as e:
        parse(**over)
    assert e.value.field == field and says in e.value.message


def test_a_named_test_decides_command_mode_and_timeout():
    r = parse(command="", test="proc-version", mode="boot")
    assert (r.test, r.command, r.mode, r.timeout) == ("proc-version", "grep -q Linux /proc/version", "test", 30)
    assert BisectRequest.from_json(json.loads(json.dumps(r.to_json()))) == r


def test_a_request_saved_before_named_tests_still_resumes():
    old = parse().to_json()
    del old["test"], old["timeout"]
    r = BisectRequest.from_json(old)
    assert (r.test, r.timeout) == ("", 600)


def test_other_build_config_is_fine_without_building():
    r = parse(build_config="arm64", build_missing="false", tester="skl-1", mode="test", max_steps="5")
    assert (r.build_config, r.build_missing, r.tester, r.mode, r.max_steps) == ("arm64", False, "skl-1", "test", 5)


def test_pins_are_those_of_unfinished_bisects_only(tmp_path):
    assert records.pinned_images(tmp_path) == set()
    running = records.BisectDir(tmp_path, records.bisect_id(7, 1767225600))
    assert running.id == "20260101-000000-bs7"
    running.create({"x": 1})
    running.set_pins(["b", "a", "a"])
    assert (running.file(records.PINS)).read_text() == "a\nb\n"
    done = records.BisectDir(tmp_path, "done")
    done.create({})
    done.set_pins(["c"])
    assert records.pinned_images(tmp_path) == {"a", "b", "c"}
    done.write_result({"status": "done"})
    assert records.pinned_images(tmp_path) == {"a", "b"} and done.finished and not running.finished


def test_steps_survive_a_torn_last_line(tmp_path):
    d = records.BisectDir(tmp_path, "x")
    d.create({})
    d.append_step({"n": 1})
    with open(d.file(records.STEPS), "a") as f:
        f.write('{"n": 2')  # the crash came mid-write
    assert d.steps() == [{"n": 1}]


def test_bisect_ids_are_plain_names(tmp_path):
    with pytest.raises(ValueError):
        records.BisectDir(tmp_path, "../etc")


def test_step_titles_say_where_the_bisect_is():
    sha = "1a2b3c4d5e6f7a8b9c0d" * 2
    assert report.step_title(3, 8, "test", sha, "6.1.0-x+") == \
        "step 3/~5: test 1a2b3c4d5e6f (image 6.1.0-x+), 8 candidates left"
    assert report.step_title(3, 8, "test", sha, "6.1.0-x+", outcome="bad") == \
        "step 3/~5: test 1a2b3c4d5e6f (image 6.1.0-x+): bad"
    assert report.step_title(1, 2, "build", sha, outcome="build failed: skip") == \
        "step 1/~1: build 1a2b3c4d5e6f: build failed: skip"
    assert report.verdicts_line([{"sha": sha, "verdict": "good"}, {"sha": "f" * 40, "verdict": "skip"}]) == \
        "good 1a2b3c4d5e6f, skip ffffffffffff"
    assert report.unresolved_summary(["a" * 40] * 9, "why").endswith(" ... (why)")


def test_the_tree_is_an_index_of_complete_images(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    d = make_image(root, "drm-tip", 1)
    make_image(root, "drm-tip", 2, build="arm64")
    (root / "drm-tip" / "half-copied").mkdir()  # no manifest yet: not an image
    tree = TreeImages(root, "http://img.example.org/", repository="fixture")
    index = tree.index()
    img = index.lookup(fake_sha("drm-tip-1"), "x86_64")
    assert img is not None and img.url == f"http://img.example.org/drm-tip/{d.name}/"
    assert tree.local_dir(img) == f"{root}/drm-tip/{d.name}/"
    assert index.lookup(fake_sha("drm-tip-2"), "x86_64") is None and index.builds() == ["arm64", "x86_64"]
    assert TreeImages(root, "http://x/", repository="other").index().images == []


def test_a_machine_bisect_holds_that_machines_lock_only():
    from buildbot_kernel.farm.driver import lock_name
    from buildbot_kernel.master.bisect_config import machine_locks

    assert machine_locks("local") == [] and machine_locks(None) == []
    [access] = machine_locks("skl-1")
    assert access.lockid.name == lock_name("skl-1") == "farm-machine-skl-1" and access.mode == "exclusive"
    assert machine_locks("skl-2")[0].lockid != access.lockid
