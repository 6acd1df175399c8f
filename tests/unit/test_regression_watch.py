"""The regression watch's pure parts: settings, the results beside the image, the baseline, the verdict
of a culprit's verification."""

from __future__ import annotations

import json

import bcrypt
import pytest

from buildbot_kernel import loop, settings
from buildbot_kernel.bisect import report
from buildbot_kernel.imagetree import results
from buildbot_kernel.imagetree.index import TreeIndex
from buildbot_kernel.imagetree.package import verify_image_dir
from buildbot_kernel.imagetree.testing import make_image
from buildbot_kernel.master.forms import MAX_REASON_CHARS

BASE = """
[[repository]]
name = "r"
url = "/tmp/r.git"
branches = ["drm-tip"]
build = "b"
[[build]]
name = "b"
[[worker]]
name = "w"
password = "secret-pw"
[[machine]]
name = "vm1"
type = "qemu"
"""


def problems(extra: str, tmp_path) -> str:
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(BASE + extra, str(tmp_path / "s.toml"))
    return str(e.value)


def test_watched_test_settings(tmp_path):
    s = settings.parse(BASE + '[[test]]\nname = "boot"\ncommand = "true"\nbranches = ["drm-tip"]\n'
                       'testers = ["vm1", "local"]\n', str(tmp_path / "s.toml"))
    assert s.test("boot").branches == ("drm-tip",) and s.test("boot").testers == ("vm1", "local")
    msg = problems('[[test]]\nname = "boot"\ncommand = "true"\nbranches = ["drm-next"]\ntesters = ["vm2"]\n',
                   tmp_path)
    assert "[[test]] ('boot').branches: 'drm-next' is not a branch of any [[repository]]" in msg
    assert "[[test]] ('boot').testers: 'vm2' is neither \"local\" nor a configured [[machine]]" in msg
    msg = problems('[[test]]\nname = "boot"\ncommand = "true"\nbranches = ["drm-tip"]\n', tmp_path)
    assert "[[test]] ('boot').testers: the test watches ['drm-tip'] but names no tester" in msg
    msg = problems('[[test]]\nname = "../boot"\ncommand = "true"\n', tmp_path)
    assert "[[test]] ('../boot').name: '../boot' holds characters other than" in msg


def test_results_are_written_beside_the_image_and_listed_in_the_index(served_tmp_path):
    root = served_tmp_path
    img = make_image(root, "drm-tip", 1)
    idx = TreeIndex(root, "http://127.0.0.1:8011")
    idx.regenerate()
    entry = json.loads((root / "drm-tip" / "index.json").read_text())["images"][0]
    assert "tests" not in entry  # untested
    results.write_result(img, "boot", {"result": "pass", "date": "2026-01-01T00:00:00Z", "machine": "vm1",
                                       "log_url": results.log_url(entry["url"], "boot")}, "ok\n")
    (img / "tests" / "junk.json").write_text("{not json")
    (img / "tests" / "odd.json").write_text('{"result": "maybe"}')
    written = idx.regenerate().written
    assert "drm-tip/index.json" in written and "index.json" in written  # a result is a change to list
    entry = json.loads((root / "drm-tip" / "index.json").read_text())["images"][0]
    assert entry["tests"] == {"boot": {"result": "pass", "date": "2026-01-01T00:00:00Z", "machine": "vm1",
                                       "log_url": entry["url"] + "tests/boot.log"}}
    assert (img / "tests" / "boot.log").read_text() == "ok\n"
    assert verify_image_dir(img) == []  # results are not payload: the image still verifies
    assert "boot: pass" in (root / "drm-tip" / "index.html").read_text()
    # a fresh process with the saved cache sees the same results
    idx.save_cache()
    again = TreeIndex(root, "http://127.0.0.1:8011")
    assert again.load_cache() == 1
    assert again.regenerate().images[0]["tests"]["boot"]["result"] == "pass"
    with pytest.raises(ValueError):
        results.write_result(img, "boot", {"result": "green"})
    with pytest.raises(ValueError):
        results.result_path(img, "../x")


def test_baseline_is_the_nearest_tested_ancestor():
    # history a - b - c - d - e; f on a side branch from a
    order = "abcde"

    def is_ancestor(x, y):
        if x == "f" or y == "f":
            return x == y or (x == "a" and y == "f")
        return order.index(x) <= order.index(y)

    def img(sha, result):
        return {"sha": sha, "name": sha, "tests": {"t": {"result": result}} if result else {}}
    images = [img("d", "skip"), img("f", "pass"), img("c", "error"), img("b", "pass"), img("a", "pass")]
    base = loop.baseline(images, "t", "e", is_ancestor)
    assert base["sha"] == "b" and loop.is_regression(base, "t")  # skip and error are no baseline
    images.insert(0, {"sha": "c", "name": "c2", "tests": {"t": {"result": "fail", "rerun": "pass"}}})
    assert loop.baseline(images, "t", "e", is_ancestor)["sha"] == "b"  # a fail that did not reproduce
    images.insert(0, img("c", "fail"))
    base = loop.baseline(images, "t", "e", is_ancestor)
    assert base["sha"] == "c" and not loop.is_regression(base, "t")  # already failing: nothing new
    assert loop.baseline([img("f", "pass")], "t", "e", is_ancestor) is None  # not an ancestor
    assert loop.baseline([img("e", "pass")], "t", "e", is_ancestor) is None  # the same commit


def test_claim_key_and_owner():
    assert loop.claim_key("boot", "drm-tip", "a" * 40) == f"bisect:boot:drm-tip:{'a' * 40}"
    assert len(loop.claim_key("boot", "x" * 300, "a" * 40)) < 100
    assert loop.owner("boot", "drm-tip", "1" * 40, "2" * 40) == \
        "regression-watch: boot on drm-tip (111111111111 pass, 222222222222 fail)"
    # the bisect form refuses a longer reason: the watch's own must pass it whatever the test and branch
    assert len(loop.BISECT_REASON) <= MAX_REASON_CHARS


def test_verification_outcome():
    ok = [{"role": "culprit", "sha": "c" * 40, "expected": "bad", "verdict": "bad"},
          {"role": "parent", "sha": "p" * 40, "expected": "good", "verdict": "good"}]
    assert report.verification_outcome(ok) == (True, "")
    flaky = [dict(ok[0], verdict="good"), ok[1]]
    verified, why = report.verification_outcome(flaky)
    assert not verified and report.is_contradiction(flaky) and why.startswith("culprit cccccccccccc tested good")
    skipped = [ok[0], dict(ok[1], verdict=None, reason="no image")]
    assert report.verification_outcome(skipped) == (False, "parent pppppppppppp tested nothing (no image)")
    assert not report.is_contradiction(skipped)
    doc = report.result_document("x", {}, report.DONE, [], verification=ok)
    assert doc["verified"] is True and doc["verification"] == ok
    assert report.result_document("x", {}, report.ABORTED, [])["verified"] is None  # nothing to verify


def test_master_configuration(tmp_path):
    """A watched test adds the image-test builder, its form (a maintainer's), and a trigger step to the
    watched branch's build only."""
    from buildbot.schedulers.forcesched import ForceScheduler

    from buildbot_kernel.master import auth
    from buildbot_kernel.master.config import make_config
    from buildbot_kernel.resources import shipped

    shipped_text = shipped("settings.toml").read_text()
    (tmp_path / "users.htpasswd").write_text(f"bob:{bcrypt.hashpw(b'x', bcrypt.gensalt(4)).decode()}\n")
    path = tmp_path / "settings.toml"
    path.write_text(shipped_text.replace('"local-worker"', '"a-real-secret"') + (
        '\n[[test]]\nname = "boot"\ncommand = "true"\nbranches = ["drm-tip"]\ntesters = ["local"]\n'
        '[auth]\nhtpasswd = "users.htpasswd"\nmaintainers = ["bob"]\n'))
    c = make_config(str(tmp_path / "master"), str(path))
    assert "image-test" in {b.name for b in c["builders"]}
    forced = {s.name for s in c["schedulers"] if isinstance(s, ForceScheduler)}
    maintainer = [r for r in c["www"]["authz"].allowRules if isinstance(r, auth.ForceSchedulerMatcher)][0]
    assert "test-image" in forced and maintainer.schedulers == forced
    steps = {b.name: [s.step_class.__name__ for s in b.factory.steps] for b in c["builders"]}
    assert steps["drm-tip"][-1] == "TriggerImageTests"
    assert "TriggerImageTests" not in steps["drm-intel-next"]
