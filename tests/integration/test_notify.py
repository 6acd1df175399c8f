"""Mail notifications on a real master, worker and SMTP server (aiosmtpd, in this process, on loopback).

The master starts while nothing listens on its mail port: the first mail (a failed branch build) waits
in the outbox, through a master restart, and arrives once the server is started. Then a bisect started
over REST by a person with an address finds the planted commit and sends exactly one culprit mail,
checked field by field.

Fixture history on drm-intel-fixes (C0 is the initial tree)::

    C0 - C1 - C2 - C3 - C4(image) - C5(REGRESSION, by "Jörg Rödel") - C6 - C7 - C8(image)
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess

import pytest

from buildbot_kernel.resources import shipped

from .harness import (
    BIN,
    FixtureRepo,
    Master,
    Worker,
    bisect_build,
    free_port,
    git,
    settings_text,
    wait_for,
)
from .smtp_inbox import body_of, smtp_server

pytestmark = pytest.mark.integration
BRANCH, OTHER = "drm-intel-fixes", "drm-intel-next"
CHECK = '! grep -q REGRESSION "$BISECT_IMAGE_DIR/vmlinuz"'
SENDER, LIST, STARTER = "buildbot-kernel@example.org", "intel-gfx-ci@example.org", "starter@example.org"
AUTHOR = ("Jörg Rödel", "joro@example.org")
COMMITTER = ("Maint Ainer", "maint@example.org")
SUCCESS, FAILURE = 0, 2


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with notify_farm(tmp_path_factory.mktemp("notify")) as parts:
        yield parts


@contextlib.contextmanager
def notify_farm(base):
    """A master with [notify] whose mail server (``smtp``, not started) is down, a worker, and the planted
    history above with images of C4 and C8; (repo, master, shas, smtp, inbox, base).  The fault suite
    (tests/faults/test_mail_down.py) uses it too."""
    repo = FixtureRepo(base, (BRANCH, OTHER))
    shas = [repo.head(BRANCH)]
    for i in range(1, 9):
        if i == 5:
            git(repo.work, "checkout", "-q", BRANCH)
            (repo.work / "drivers/gpu/i915.c").write_text(
                '/* fixture */\nconst char i915_state[] = "i915 REGRESSION";\nint i915_init(void) { return 0; }\n')
            git(repo.work, "add", "-A")
            stamp = f"@{repo.date + 3600} +0000"
            repo.date += 3600
            git(repo.work, "commit", "-q", "-m", "drm/i915: change 5", env={
                "GIT_AUTHOR_NAME": AUTHOR[0], "GIT_AUTHOR_EMAIL": AUTHOR[1], "GIT_COMMITTER_NAME": COMMITTER[0],
                "GIT_COMMITTER_EMAIL": COMMITTER[1], "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})
            shas.append(git(repo.work, "rev-parse", "HEAD"))
        else:
            shas.append(repo.commit_file(BRANCH, f"drivers/gpu/part{i}.c", f"int part{i}(void) {{ return {i}; }}\n",
                                         f"drm/i915: change {i}"))
    git(repo.work, "push", "-q", "origin", f"{shas[4]}:refs/heads/{BRANCH}")
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    smtp_port = free_port()  # nothing listens here until test_mail_waits_for_the_server starts the server
    extra = f"""
[[test]]
name = "i915-state"
command = '{CHECK}'
mode = "test"
[notify]
smtp = "127.0.0.1:{smtp_port}"
from = "{SENDER}"
to = ["{LIST}"]
events = ["build-failed", "regression", "culprit"]
cc_culprit = true
"""
    master = Master(base, settings_text(str(repo.bare), (BRANCH, OTHER), ports, max_builds=3, extra=extra))
    worker = Worker(base, "w1", "pw", ports["worker"])
    smtp, inbox = smtp_server(smtp_port)
    try:
        master.start(ports["web"])
        worker.start()
        # images of C4 (the last good one: the head at start-up) and C8; the bisect builds the rest on demand
        wait_for(lambda: shas[4] in image_shas(master, BRANCH), 120, "the head image of C4")
        git(repo.work, "push", "-q", "origin", f"{shas[8]}:refs/heads/{BRANCH}")
        wait_for(lambda: shas[8] in image_shas(master, BRANCH), 120, "the head image of C8")
        wait_for(master.idle, 60, "the pipeline to be idle")
        yield repo, master, shas, smtp, inbox, base
    finally:
        worker.stop()
        master.stop()
        smtp.stop(no_assert=True)


def image_shas(master, branch) -> set[str]:
    d = master.dir / "images" / branch
    return {json.loads(m.read_text())["sha"] for m in d.glob("*/metadata.json")} if d.is_dir() else set()


def outbox(master) -> list:
    d = master.dir / "state" / "outbox"
    return sorted(d.glob("*.mail.json")) if d.is_dir() else []


def test_mail_waits_for_the_server_and_names_the_first_compiler_error(farm):
    repo, master, _, smtp, inbox, _ = farm
    broken = repo.commit_file(OTHER, "drivers/gpu/broken.c", "int broken(void)\n{\n\treturn no_such_symbol;\n}\n",
                              "drm/i915: break the build")
    repo.push(OTHER)
    bid = master.builder_id(OTHER)

    def failed_build():
        return next((b for b in master.builds() if b["builderid"] == bid and b["complete"]
                     and b["results"] == FAILURE), None)
    build = wait_for(failed_build, 120, f"the failed build of {OTHER}")
    # the mail server is down: the mail is kept in the outbox and the failure logged, the build is not touched
    queued = wait_for(lambda: outbox(master), 30, "the mail in the outbox")
    wait_for(lambda: "kept in the outbox" in master.log_tail(20000), 30, "the delivery failure in the log")
    assert json.loads(queued[0].read_text())["recipients"] == [LIST]
    assert master.get(f"builds/{build['buildid']}")["builds"][0]["results"] == FAILURE
    # a master restart keeps the queued mail
    master.stop()
    assert outbox(master) == queued
    master.start(master.web_port)
    smtp.start()  # the server comes back: the retry loop delivers the kept mail
    mails = wait_for(lambda: inbox.of_kind("build-failed"), 90, "the build-failed mail")
    wait_for(lambda: not outbox(master), 30, "the outbox to be empty")
    assert len(mails) == 1
    msg = mails[0]["msg"]
    assert mails[0]["rcpt"] == [LIST] and mails[0]["mail_from"] == SENDER
    assert msg["Subject"].startswith(f"[build] {OTHER} {broken[:12]} failed: drivers/gpu/broken.c:3:")
    assert "no_such_symbol" in msg["Subject"]
    body = body_of(mails[0])
    first_error = re.search(r"First compiler error:\n    (.*)\n", body).group(1)
    assert first_error.startswith("drivers/gpu/broken.c:3:") and "error:" in first_error, body
    step = next(s for s in master.steps(build["buildid"]) if s["name"] == "compile")
    log_url = (f"http://localhost:{master.web_port}/#/builders/{bid}/builds/{build['number']}/steps/"
               f"{step['number']}/logs/errors")
    assert f"errors log: {log_url}\n" in body, body
    assert f"build:      http://localhost:{master.web_port}/#/builders/{bid}/builds/{build['number']}\n" in body


def test_manual_bisect_sends_one_culprit_mail_with_every_contract_field(farm):
    repo, master, shas, smtp, inbox, base = farm
    wait_for(lambda: smtp.server is not None and inbox.of_kind("build-failed"), 120, "the first test's mail")
    bsid = master.force("bisect", {"target": BRANCH, "tester": "local", "test": "i915-state",
                                   "build_missing": True, "build_config": "x86_64", "max_steps": 0,
                                   "good": shas[4], "bad": shas[8],
                                   "username": f"Per Son <{STARTER}>"})
    build = bisect_build(master, bsid, timeout=240)
    assert build["results"] == SUCCESS, build["state_string"]
    bdir = master.dir / "state" / "bisects" / build["properties"]["bisect_id"][0]
    result = json.loads((bdir / "result.json").read_text())
    culprit = shas[5]
    assert result["first_bad"]["sha"] == culprit
    mails = wait_for(lambda: inbox.of_kind("culprit"), 60, "the culprit mail")
    wait_for(lambda: not outbox(master) and master.idle(), 60, "everything delivered")
    assert len(inbox.of_kind("culprit")) == 1 and not inbox.of_kind("flaky")
    mail = mails[0]
    msg = mail["msg"]
    build_url = f"http://localhost:{master.web_port}/#/builders/{build['builderid']}/builds/{build['number']}"
    # headers: subject (contract), the list and the person who started it, cc the author and committer
    assert msg["Subject"] == f"[bisect] i915-state on {BRANCH}: first bad commit {culprit[:12]} drm/i915: change 5"
    assert {a.addr_spec for a in msg["To"].addresses} == {LIST, STARTER}
    assert {(a.display_name, a.addr_spec) for a in msg["Cc"].addresses} == {AUTHOR, COMMITTER}
    assert sorted(mail["rcpt"]) == sorted([LIST, STARTER, AUTHOR[1], COMMITTER[1]])
    assert "\n" not in str(msg["Subject"]) and msg["From"].addresses[0].addr_spec == SENDER
    body = body_of(mails[0])
    fields = dict(re.findall(r"^([a-z ]+):\s+(.*)$", body, re.M))
    date = git(repo.bare, "show", "-s", "--format=%cI", culprit)
    assert fields["commit"] == culprit
    assert fields["subject"] == "drm/i915: change 5"
    assert fields["author"] == f"{AUTHOR[0]} <{AUTHOR[1]}>"
    assert fields["date"] == date
    assert fields["link"] == "(no commit link: set [[repository]] web_url)"
    assert fields["range"] == f"good {shas[4]} .. bad {shas[8]}"
    assert fields["test"] == f"i915-state (mode test): {CHECK}"
    assert fields["first bad image"] == result["first_bad"]["image_url"] and culprit[:6] in fields["first bad image"]
    assert result["last_good"]["sha"] == shas[4] and result["last_good"]["image_url"]
    assert fields["last good image"] == f"{result['last_good']['image_url']} ({shas[4][:12]} drm/i915: change 4)"
    assert fields["config"] == "x86_64: ARCH=x86_64 defconfig"
    image = json.loads(next((master.dir / "images" / BRANCH).glob(f"*_{culprit[:6]}_*/metadata.json")).read_text())
    assert fields["compiler"] == image["compiler"] and image["compiler"]
    assert fields["build"] == build_url
    image_port = result["first_bad"]["image_url"].split(":")[2].split("/")[0]
    assert (f"    buildbot-kernel bisect --repo linux --good {shas[4]} --bad {shas[8]} --index "
            f"http://127.0.0.1:{image_port}/index.json --build x86_64 --run '{CHECK}'\n") in body
    assert f"    git clone {repo.bare} linux\n" in body
    # the trailers end the mail
    assert body.rstrip("\n").splitlines()[-2:] == [f"Reported-by: {SENDER}", f"Closes: {build_url}"]
    # the bisect log in the mail, pasted as it is (indented), replays to the culprit in a fresh clone
    block = body.split("git bisect log (replay it with `git bisect replay <file>` in a clone):\n")[1].split("\n\n")[0]
    assert [line[4:] for line in block.splitlines()] == (bdir / "bisect.log").read_text().splitlines()
    (base / "mail.log").write_text(block + "\n")
    clone = base / "replay"
    git(base, "clone", "-q", "-b", BRANCH, str(repo.bare), str(clone))
    git(clone, "bisect", "replay", str(base / "mail.log"))
    assert git(clone, "rev-parse", "refs/bisect/bad") == culprit
    # on-demand builds of the bisect succeeded and nothing else was mailed
    assert len(inbox.received) == 2, [m["msg"]["Subject"] for m in inbox.received]


def test_bad_notify_settings_fail_checkconfig_naming_key_and_fix(tmp_path):
    d = tmp_path / "m"
    subprocess.run([str(BIN / "buildbot"), "create-master", "-q", str(d)], check=True)
    shutil.copy(shipped("master.cfg"), d / "master.cfg")
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    (d / "settings.toml").write_text(settings_text("/nonexistent.git", (BRANCH,), ports, extra=(
        '[notify]\nsmtp = "localhost"\nfrom = "bb@example.org"\nto = ["list@example.org", "nobody"]\n'
        'events = ["culprit", "boot"]\nuser = "bb"\npassword_file = "missing.pw"\n')))
    r = subprocess.run([str(BIN / "buildbot"), "checkconfig", str(d)], env=Master.env.fget(None),
                       capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    where = f"{d / 'settings.toml'}: [notify]"
    assert f"{where}.smtp: 'localhost' is not host:port; write the mail server as host:port" in out, out
    assert f"{where}.to: 'nobody' is not a mail address; write \"name@example.org\"" in out
    assert f"{where}.events: expected a list drawn from ['build-failed', 'regression', 'culprit'], got " in out
    assert f"{where}.password_file: cannot read {d / 'missing.pw'}: No such file or directory" in out
