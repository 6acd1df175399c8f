"""Attempts -> verdict: an infrastructure failure is never bad (pure)."""

import pytest

from buildbot_kernel.farm import steplogic as sl


def test_report_kinds():
    assert sl.from_report({"result": "good", "uname": "r", "reason": "x"}).kind == "verdict"
    for code in sl.IMAGE_ERRORS:
        assert sl.from_report({"result": "boot-error", "error": code}).kind == "image"
    assert sl.from_report({"result": "boot-error", "error": "download"}).kind == "infra"
    assert sl.from_report({"result": "boot-error", "error": "kexec-exec"}).kind == "infra"


def test_timeouts_by_phase():
    assert sl.from_timeout("assigned", 9).kind == "infra"
    assert sl.from_timeout("fetched", 9).kind == "infra"
    k = sl.from_timeout("kexec", 9)
    assert k.kind == "candidate" and k.boot_failure
    r = sl.from_timeout("running", 9)
    assert r.kind == "candidate" and not r.boot_failure
    assert sl.from_reset("kexec").boot_failure and not sl.from_reset("running").boot_failure


def test_uname_mismatch():
    end = sl.check_uname(sl.AttemptEnd("verdict", "", result="bad", uname="old"), "new")
    assert end.kind == "mismatch"
    assert sl.check_uname(sl.AttemptEnd("verdict", "", result="bad", uname="new"), "new").kind == "verdict"
    out = sl.conclude([end], "boot", 1, 3)
    assert out.verdict == "skip" and out.infra_failures == 1


@pytest.mark.parametrize("mode, verdict", [("boot", "bad"), ("test", "skip")])
def test_boot_failure_depends_on_mode(mode, verdict):
    ends = [sl.from_timeout("kexec", 5), sl.from_reset("kexec")]
    out = sl.conclude(ends, mode, 0, 3)
    assert out.verdict == verdict and len(out.attempts) == 2


def test_test_hang_is_skip_in_both_modes():
    for mode in ("boot", "test"):
        assert sl.conclude([sl.from_timeout("running", 5)], mode, 0, 3).verdict == "skip"


def test_infra_is_never_bad_and_breaks_the_machine_at_the_limit():
    ends = [sl.from_timeout("assigned", 5)] * 3
    for mode in ("boot", "test"):
        out = sl.conclude(ends, mode, 2, 3)
        assert out.verdict == "skip" and not out.machine_broken
        out = sl.conclude(ends, mode, 3, 3)
        assert out.verdict == "skip" and out.machine_broken and "broken" in out.reason


def test_verdict_after_retry_wins():
    verdict = sl.AttemptEnd("verdict", "test exited 1", result="bad", uname="r")
    ends = [sl.from_timeout("assigned", 5), verdict]
    out = sl.conclude(ends, "test", 0, 3)
    assert out.verdict == "bad" and out.infra_failures == 1 and out.uname == "r"


def test_image_fault_is_skip():
    end = sl.from_report({"result": "boot-error", "error": "sha256", "reason": "x"})
    out = sl.conclude([end], "boot", 0, 3)
    assert out.verdict == "skip" and "sha256" in out.reason
