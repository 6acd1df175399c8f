"""Hostile values in every force form, sent over REST to a real master the way a script on the lab network
would (no [auth]: everyone on loopback is an admin, so only the forms' own checks stand in the way).

No worker is started: a forced branch build or bisect stays queued, which is all these tests look at
(what the form accepted into the build request), and the machine stays quiet for the other helpers.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from integration.harness import FixtureRepo, Master, free_port, settings_text

from buildbot_kernel.master.forms import MAX_REASON_CHARS

pytestmark = pytest.mark.integration
BRANCH = "drm-intel-fixes"
LOOP = f"""
[[test]]
name = "proc"
command = "grep -q Linux /proc/version"
branches = ["{BRANCH}"]
testers = ["local"]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("forms")
    repo = FixtureRepo(base, (BRANCH,))
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    master = Master(base, settings_text(str(repo.bare), (BRANCH,), ports, extra=LOOP))
    master.start(ports["web"])
    try:
        yield {"master": master, "sha": repo.head(BRANCH)}
    finally:
        master.stop()


def force(master: Master, scheduler: str, **params) -> tuple[int, dict]:
    """The JSON-RPC force call: (HTTP status, answer)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{master.web_port}/api/v2/forceschedulers/{scheduler}",
        data=json.dumps({"jsonrpc": "2.0", "method": "force", "id": 1, "params": params}).encode(),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


FORMS = [(f"rebuild-{BRANCH}", {}), ("heads-now", {}), ("test-image", {"image_test": "proc", "image_name": "x"}),
         ("bisect", {"target": BRANCH, "good": "HEAD~1", "bad": "HEAD", "test": "", "command": "true"})]


@pytest.mark.parametrize("scheduler, params", FORMS, ids=[f[0] for f in FORMS])
def test_a_reason_longer_than_the_database_keeps_is_refused_naming_the_field(lab, scheduler, params):
    """The hole: no form bounded its reason; Buildbot stores "A build was forced by '<owner>': <reason>" in
    a 256-character column, so on PostgreSQL (several masters) a long reason failed the force deep in the
    database instead of at the form, and on SQLite a 100k-character reason was kept and shown on every
    build page.  Every form now refuses a reason past MAX_REASON_CHARS, naming the field."""
    master = lab["master"]
    before = master.asked_for()
    status, answer = force(master, scheduler, reason="r" * 100_000, **params)
    assert status == 400, (status, answer)
    assert "reason" in json.dumps(answer["error"])[:2000] and f"{MAX_REASON_CHARS}" in json.dumps(answer["error"])
    assert master.asked_for() == before


def test_a_reason_within_the_bound_is_taken(lab):
    master = lab["master"]
    before = master.asked_for()
    status, answer = force(master, f"rebuild-{BRANCH}", reason="x" * MAX_REASON_CHARS, revision=lab["sha"])
    assert status == 200 and "error" not in answer, answer
    assert master.asked_for() == before + 1  # what the refusals above count does count a force
    bsid = answer["result"][0]
    assert master.get(f"buildsets/{bsid}")["buildsets"][0]["reason"].endswith("x" * MAX_REASON_CHARS)


def test_the_heads_form_takes_no_source_stamp(lab):
    """The hole: "Check branch heads now" had Buildbot's default codebase fields, so any maintainer could
    file a build whose source stamp names a repository, branch and revision of their choosing (shown on
    the build page as what the build was of) although the heads check reads only the settings."""
    master = lab["master"]
    status, answer = force(master, "heads-now", reason="check", repository="https://evil.example.org/x.git",
                           branch="../../etc", revision="-" + "f" * 39, project="evil")
    assert status == 200 and "error" not in answer, answer
    stamps = master.get(f"buildsets/{answer['result'][0]}")["buildsets"][0]["sourcestamps"]
    for ss in stamps:
        assert not any(ss[k] for k in ("repository", "branch", "revision", "project")), ss
