"""The regression watch on a QEMU machine with the real tiny kernel: an early panic in a pushed commit
is found, bisected, verified and mailed with nobody filling a form.

History on linux-6.1.y (tests/farm/loop_farm.py, planted_history.py)::

    C0 (built, booted: pass) - C1 - C2 (panics in kernel_init) - C3     pushed at once: only C3 is built

The watched test ``boot`` (mode boot, tester vm1) boots C3's image: the panic resets the machine into
stage 1 (``panic=-1``), a boot failure, so ``fail``; the re-run fails too, and the regression watch
starts a bisect (good C0, bad C3) on vm1.  It builds C1 and C2 on demand, names C2, verifies it (C2 bad
again, C1 good), and one culprit mail reaches the SMTP server in this process.
"""

from __future__ import annotations

import pytest
from integration.harness import bisect_build, wait_for
from integration.smtp_inbox import body_of

from .loop_farm import (
    BRANCH,
    LIST,
    TEST,
    WEB_URL,
    LoopFarm,
    bisect_result,
    images,
    qemu_running,
    watch_bisects,
    watch_result,
)

pytestmark = [pytest.mark.e2e, pytest.mark.realkernel, pytest.mark.timeout(2700)]
COUNT, PANIC_AT = 3, 2
SUCCESS = 0


@pytest.fixture(scope="module")
def loop(linux_tree, tmp_path_factory):
    farm = LoopFarm(tmp_path_factory.mktemp("loop-e2e"), linux_tree, COUNT, PANIC_AT)
    try:
        farm.start()
        yield farm
    finally:
        farm.stop()
    wait_for(lambda: not qemu_running(farm.console), 30, "the test machine's QEMU to be stopped with the master")


def buildset_of(master, build) -> int:
    return master.get(f"buildrequests/{build['buildrequestid']}")["buildrequests"][0]["buildsetid"]


def test_a_pushed_early_panic_is_bisected_verified_and_mailed_unattended(loop):
    master, shas = loop.master, loop.shas
    culprit, head = shas[PANIC_AT], shas[COUNT]
    good = watch_result(master, shas[0])
    assert good["result"] == "pass" and good["machine"] == "vm1", good

    loop.push_bad_head()
    mail = loop.culprit_mail(1800)

    # the head's image was booted by the watch: a boot failure, twice (run and re-run)
    bad = watch_result(master, head)
    assert bad["result"] == "fail" and bad["rerun"] == "fail" and bad["machine"] == "vm1", bad
    # one bisect, started by the watch; no other bisect exists: nobody filled the form
    [bisect] = watch_bisects(master)
    assert len(master.builds("bisect")) == 1
    assert bisect["properties"]["owner"][0] == (f"regression-watch: {TEST} on {BRANCH} "
                                               f"({shas[0][:12]} pass, {head[:12]} fail)")
    build = bisect_build(master, buildset_of(master, bisect), timeout=60)
    assert build["results"] == SUCCESS, build["state_string"]
    result = bisect_result(master, build)
    assert result["status"] == "done" and result["first_bad"]["sha"] == culprit, result
    req = result["request"]
    assert (req["mode"], req["tester"], req["test"], req["good"], req["bad"]) == ("boot", "vm1", TEST, [shas[0]], head)
    assert result["verified"] is True
    assert [(v["role"], v["sha"], v["verdict"]) for v in result["verification"]] == [
        ("culprit", culprit, "bad"), ("parent", shas[PANIC_AT - 1], "good")]
    # every step ran on the image of its commit: a good one reported from that kernel, a bad one never
    # reached stage 2 (the panic)
    published = images(master)
    for s in result["steps"]:
        assert published[s["image"]]["sha"] == s["sha"], s
        if s["verdict"] == "good":
            assert s["uname"] == s["image"] and shas.index(s["sha"]) < PANIC_AT, s
        else:
            assert s["verdict"] == "bad" and not s["uname"] and "boot failure" in s["reason"], s
            assert shas.index(s["sha"]) >= PANIC_AT, s

    # the regression mail and the culprit mail, to the list; the culprit's author copied
    wait_for(lambda: master.idle() and not list((master.dir / "state" / "outbox").glob("*.mail.json")), 120,
             "the master idle and every mail delivered")
    [regression] = loop.inbox.of_kind("regression")
    assert regression["msg"]["Subject"].startswith(f"[regression] {TEST} on {BRANCH}: ")
    assert f"commit {shas[0]}" in body_of(regression) and f"commit {head}" in body_of(regression)
    assert len(loop.inbox.of_kind("culprit")) == 1 and not loop.inbox.of_kind("flaky")
    assert not loop.inbox.of_kind("build-failed")
    assert mail["msg"]["Subject"] == (f"[bisect] {TEST} on {BRANCH}: first bad commit {culprit[:12]} "
                                      f"init: panic change {PANIC_AT}")
    assert LIST in mail["rcpt"] and "dev@example.org" in mail["rcpt"]
    body = body_of(mail)
    for line in (f"commit:   {culprit}", f"link:     {WEB_URL.format(sha=culprit)}",
                 f"range:    good {shas[0]} .. bad {head}", f"test:     {TEST} (mode boot): true",
                 "verified: yes (the culprit re-tested bad, its parent good)",
                 f"first bad image: {result['first_bad']['image_url']}"):
        assert f"\n{line}\n" in body, (line, body)
    print(f"{len(result['steps'])} bisect steps, {result['builds']} on-demand builds; culprit mail "
          f"{mail['at'] - loop.pushed_at:.0f} s after the push")
