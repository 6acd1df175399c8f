"""Fault 8: the mail server down when a bisect names its culprit.

The master of the notification tests (tests/integration/test_notify.py: [notify] with culprit mails, a
planted regression, a real SMTP server on loopback that is not started) bisects; the culprit mail cannot be
delivered, is kept in the outbox and retried, and arrives exactly once when the server comes up.
"""

from __future__ import annotations

import json
import time

import pytest
from integration.harness import bisect_build, wait_for
from integration.test_notify import BRANCH, CHECK, notify_farm, outbox

pytestmark = [pytest.mark.integration, pytest.mark.faults]
SUCCESS = 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with notify_farm(tmp_path_factory.mktemp("mail-down")) as parts:
        yield parts


def test_culprit_mail_waits_for_the_mail_server_and_is_sent_once(lab):
    t0 = time.monotonic()
    repo, master, shas, smtp, inbox, _ = lab
    bsid = master.force("bisect", {"target": BRANCH, "tester": "local", "test": "i915-state",
                                   "build_missing": True, "build_config": "x86_64", "max_steps": 0,
                                   "good": shas[4], "bad": shas[8], "username": "Per Son <per@example.org>"})
    build = bisect_build(master, bsid, timeout=300)
    assert build["results"] == SUCCESS, build["state_string"]
    result = json.loads((master.dir / "state" / "bisects" / build["properties"]["bisect_id"][0] / "result.json")
                        .read_text())
    assert result["first_bad"]["sha"] == shas[5]
    # the server is down: the culprit mail waits in the outbox, the failure is logged and retried
    queued = wait_for(
        lambda: [p for p in outbox(master) if "first bad commit" in json.loads(p.read_text())["message"]], 60,
        "the culprit mail in the outbox")
    assert len(queued) == 1
    wait_for(lambda: master.log_tail(20000).count(f"cannot deliver {queued[0].name}") >= 2, 120,
             "a second delivery attempt (the retry)")
    assert inbox.received == [] and build["results"] == SUCCESS  # the bisect's result does not wait for mail
    smtp.start()  # the server comes back
    mails = wait_for(lambda: inbox.of_kind("culprit"), 120, "the culprit mail")
    wait_for(lambda: not outbox(master), 30, "the outbox to be empty")
    assert len(mails) == 1 and len(inbox.received) == 1, [m["msg"]["Subject"] for m in inbox.received]
    assert mails[0]["msg"]["Subject"].startswith(f"[bisect] i915-state on {BRANCH}: first bad commit {shas[5][:12]}")
    assert CHECK in mails[0]["msg"].get_content()
    print(f"fault 8 (mail server down at the culprit): {time.monotonic() - t0:.0f}s")
