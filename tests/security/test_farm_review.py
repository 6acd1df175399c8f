"""Holes of the farm review, each driven through the part an outsider reaches: the machines' registry (what
a key holder, maybe a candidate kernel running a commit's code, can make the server keep and log), the real
settings parser (what ``buildbot checkconfig`` lets through) and the kernel-facts step (what a pushed
commit can make a build do).
"""

from __future__ import annotations

import json
import logging

from buildbot_kernel.farm import instructions as ins
from buildbot_kernel.farm.registry import FIELD_CHARS, KEY_PLACEHOLDER, Registry
from buildbot_kernel.settings import Machine

KEY = "the-m1-machine-key-0123456789"
IMAGE = {"name": "6.1.0-good", "url": "http://h/i/", "files": {"vmlinuz": {"sha256": "ab" * 32}}}


# --- refused reports -----------------------------------------------------------------------------------

def test_a_refused_reports_result_is_kept_redacted_and_bounded(tmp_path):
    """The hole: a refused report's ``result`` was kept whole (up to the 256 KiB body limit) with the
    machine key in it, and shown on the dashboard, at GET /machines/<name> and in farm.json; an accepted
    report's fields have the key replaced and are cut to 500 characters."""
    state = tmp_path / "state.json"
    reg = Registry(["m1"], state, keys={"m1": KEY})
    ok, why = reg.report("m1", {"result": "<script>x</script>" + "A" * 250_000 + " " + KEY, "token": KEY})
    assert not ok and KEY not in why
    reg.report("m1", {"result": KEY + " and more", "token": "nope"})
    kept = reg.get("m1").last_refused
    assert kept["result"].startswith(KEY_PLACEHOLDER) and len(kept["result"]) <= FIELD_CHARS
    assert KEY not in json.dumps(kept)
    reg.assign(ins.make_assignment(Machine(name="m1"), IMAGE, "true", "boot", "http://s"))  # writes the file
    snapshot = json.dumps(reg.snapshot())
    assert KEY not in snapshot and len(snapshot) < 5000
    on_disk = state.read_text()
    assert KEY not in on_disk and len(on_disk) < 5000


def test_refused_reports_with_ever_new_results_log_one_line(caplog):
    """The hole: the refusal log's rate limiter was keyed on text holding the first 20 characters of the
    sender's ``result``, so 5000 reports with distinct results wrote 5000 log lines."""
    caplog.set_level(logging.WARNING, logger="buildbot_kernel.farm.registry")
    reg = Registry(["m1"], keys={"m1": KEY})
    for i in range(5000):
        assert reg.report("m1", {"result": f"x{i}", "token": "t"})[0] is False
    lines = [r.getMessage() for r in caplog.records if "refused report" in r.getMessage()]
    assert len(lines) == 1 and "unknown result 'x0'" in lines[0], lines[:3]
    assert reg.get("m1").refused == 5000
    assert reg.get("m1").last_refused["why"].startswith("unknown result 'x4999'")  # the message keeps the text
