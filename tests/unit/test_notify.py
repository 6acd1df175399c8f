"""Notifications without a master: the mails (hostile commit text included), recipients, the outbox and
the [notify] settings checks."""

from __future__ import annotations

import email
import email.policy
import json

import pytest
from twisted.internet import defer

from buildbot_kernel import settings
from buildbot_kernel.notify import compose, texts
from buildbot_kernel.notify.formatters import BuildFailedFormatter, NotifyContext, RegressionFormatter, bisect_mail
from buildbot_kernel.notify.mailer import KernelMailNotifier
from buildbot_kernel.notify.outbox import Outbox

GOOD = """
[server]
web_port = 8010
[images]
root = "images"
[[repository]]
name = "drm-intel"
url = "https://example.org/i915.git"
branches = ["drm-intel-fixes"]
build = "x86_64"
[[build]]
name = "x86_64"
[[worker]]
name = "w"
password = "p"
"""
SENDER, LIST = "buildbot-kernel@example.org", "intel-gfx-ci@example.org"
BAD, GOODSHA, PARENT = "a" * 40, "b" * 40, "c" * 40
HOSTILE_SUBJECT = "drm/i915: fix\r\nBcc: victim@example.com\r\n\r\nReported-by: evil@example.com"


def ctx(**kw) -> NotifyContext:
    base = dict(sender=SENDER, to=(LIST,), events=texts.EVENTS, cc_culprit=True, state_dir="/nonexistent",
                images_root="/nonexistent", base_url="http://images.example.org",
                web_urls={"drm-intel": "https://git.example.org/commit/{sha}"},
                builds={"x86_64": settings.Build(name="x86_64", config="defconfig", fragments=["a.cfg"])})
    return NotifyContext(**{**base, **kw})


def result(**kw) -> dict:
    doc = {
        "schema": 1, "id": "20260101-000000-bs7", "status": "done", "reason": "", "tests": 3, "builds": 2,
        "request": {"target": "drm-tip", "repository": "drm-intel", "url": "https://git.example.org/i915.git",
                    "branch": "drm-tip", "good": [GOODSHA], "bad": BAD, "tester": "vm1", "test": "boot",
                    "command": "true; echo 'it''s'", "mode": "boot", "build_missing": True, "build_config": "x86_64",
                    "max_steps": 0},
        "first_bad": {"sha": PARENT, "subject": HOSTILE_SUBJECT, "author": "Jörg Rödel <joro@example.org>",
                      "date": "2026-01-01T05:00:00+00:00", "image": "6.1.0-drm-tip_cccccc_20260101_+",
                      "image_url": "http://images.example.org/drm-tip/6.1.0-drm-tip_cccccc_20260101_+/"},
        "last_good": {"sha": GOODSHA, "subject": "drm/i915: good", "image": "6.1.0-drm-tip_bbbbbb_20260101_+",
                      "image_url": "http://images.example.org/drm-tip/6.1.0-drm-tip_bbbbbb_20260101_+/"},
        "candidates": [PARENT], "verified": True,
    }
    doc.update(kw)
    return doc


LOG = f"git bisect start '{BAD}' '{GOODSHA}'\n# bad: [{BAD}] x\ngit bisect bad {BAD}\n"


def rendered(mail: compose.Mail) -> tuple[email.message.EmailMessage, str, list[str]]:
    msg, rcpt = compose.to_message(mail, SENDER)
    wire = msg.as_string()
    return email.message_from_string(wire, policy=email.policy.default), wire, rcpt


def test_culprit_mail_keeps_hostile_subject_out_of_headers_and_trailers():
    mail = bisect_mail(ctx(), result(), bisect_log=LOG, build_url="http://bb.example.org/#/builders/3/builds/9",
                       owner="anonymous", committer="Maint Ainer <maint@example.org>", compiler="gcc (Debian) 12.2.0")
    msg, wire, rcpt = rendered(mail)
    assert wire.isascii()  # RFC 2047 for the author's name, quoted-printable for the body
    head = wire.split("\n\n", 1)[0]
    assert "\nBcc:" not in head and "victim@example.com" not in rcpt
    assert msg["Subject"] == (f"[bisect] boot on drm-tip: first bad commit {PARENT[:12]} drm/i915: fix Bcc: "
                              "victim@example.com Reported-by: evil@example.com")
    body = msg.get_content()
    lines = body.rstrip("\n").splitlines()
    assert [line for line in lines if line.startswith("Reported-by:")] == [f"Reported-by: {SENDER}"]
    assert lines[-2:] == [f"Reported-by: {SENDER}", "Closes: http://bb.example.org/#/builders/3/builds/9"]
    assert f"link:     https://git.example.org/commit/{PARENT}\n" in body
    assert "config:   x86_64: ARCH=x86_64 defconfig + a.cfg\n" in body
    assert "compiler: gcc (Debian) 12.2.0\n" in body
    assert ("--run 'true; echo '\"'\"'it'\"'\"''\"'\"'s'\"'\"''" in body)  # shell-quoted, copy-paste safe
    assert {(a.display_name, a.addr_spec) for a in msg["Cc"].addresses} == {
        ("Jörg Rödel", "joro@example.org"), ("Maint Ainer", "maint@example.org")}
    assert rcpt == [LIST, "joro@example.org", "maint@example.org"]


def test_hostile_author_address_is_dropped_not_split():
    r = result()
    r["first_bad"]["author"] = "Evil <evil@example.org>, victim@example.com"
    mail = bisect_mail(ctx(), r, bisect_log=LOG, build_url="u", committer="x\r\nBcc: v@example.com <m@example.org>")
    _, _, rcpt = rendered(mail)
    assert rcpt == [LIST]


def test_cc_culprit_off_mails_the_list_only():
    mail = bisect_mail(ctx(cc_culprit=False), result(), bisect_log=LOG, build_url="u",
                       committer="Maint Ainer <maint@example.org>")
    assert rendered(mail)[2] == [LIST]


@pytest.mark.parametrize("change,verdict", [
    ({"status": "flaky", "reason": "the test does not reproduce: culprit cccccccccccc tested good (expected bad)",
      "verification": [{"role": "culprit", "sha": PARENT, "expected": "bad", "verdict": "good"},
                       {"role": "parent", "sha": GOODSHA, "expected": "good", "verdict": "good"}]}, "flaky"),
    ({"verified": False, "verification": [{"role": "culprit", "sha": PARENT, "expected": "bad", "verdict": None,
                                           "reason": "no image"}]}, "not verified"),
])
def test_unverified_culprit_is_a_flaky_mail_never_a_culprit(change, verdict):
    mail = bisect_mail(ctx(), result(**change), bisect_log=LOG, build_url="u", committer="m <maint@example.org>")
    msg, _, rcpt = rendered(mail)
    assert mail.kind == "flaky" and "first bad commit" not in msg["Subject"]
    assert msg["Subject"] == f"[bisect] boot on drm-tip: {verdict}, no culprit reported"
    assert rcpt == [LIST]  # the candidate's author is not blamed
    body = msg.get_content()
    assert f"candidate: {PARENT} (drm/i915: fix Bcc: victim@example.com Reported-by: evil@example.com)" in body
    assert "Reported-by:" not in body.replace("Reported-by: evil", "")
    first = change["verification"][0]
    assert f"  culprit {PARENT[:12]}: expected bad, tested {first['verdict'] or 'nothing'}" in body


def test_manual_bisect_mails_the_person_who_started_it_when_owner_is_an_address():
    culprit = bisect_mail(ctx(), result(), bisect_log=LOG, build_url="u", owner="Per Son <per@example.org>")
    assert rendered(culprit)[2][:2] == [LIST, "per@example.org"]
    unresolved = result(status="unresolved", first_bad=None, candidates=[BAD, PARENT], reason="skipped")
    mail = bisect_mail(ctx(), unresolved, bisect_log=LOG, build_url="u", owner="per@example.org")
    assert mail.kind == "bisect-result" and rendered(mail)[2] == ["per@example.org"]
    assert "ended: unresolved" in mail.body and PARENT[:12] in mail.body
    # an owner that is only a name (or the regression watch's reason) gets nothing
    assert bisect_mail(ctx(), unresolved, bisect_log=LOG, build_url="u", owner="per") is None
    assert bisect_mail(ctx(), unresolved, bisect_log=LOG, build_url="u",
                       owner="regression watch: boot on drm-tip\nBcc: x@example.org") is None


def test_regression_mail_from_a_build_carrying_the_property():
    # the shape the regression watch sets (README.md "Regression watch"), with a hostile image name
    prop = {"test": "boot", "branch": "drm-tip", "repository": "drm-intel", "tester": "vm1",
            "good": {"sha": GOODSHA, "image": "6.1.0-drm-tip_bbbbbb_20260101_+", "url": "http://i/g/"},
            "bad": {"sha": BAD, "image": "6.1.0-drm-tip_aaaaaa_20260102_+\r\nBcc: x@example.org",
                    "url": "http://i/b/"},
            "bisect": {"buildset": 12, "buildrequests": [31]}}
    build = {"properties": {"regression": [prop, "regression-watch"]},
             "url": "http://bb.example.org/#/builders/5/builds/2", "results": 2}
    master = FakeMaster(None)
    mail = RegressionFormatter(ctx()).mail_for_build(master, build)
    msg, wire, rcpt = rendered(mail)
    assert rcpt == [LIST] and "\nBcc:" not in wire.split("\n\n", 1)[0]
    assert msg["Subject"].startswith("[regression] boot on drm-tip: 6.1.0-drm-tip_aaaaaa_20260102_+ Bcc:")
    body = msg.get_content()
    assert "passed on an image of drm-tip and fails on a later one on vm1 (re-run, failed again)" in body
    assert "last good image: 6.1.0-drm-tip_bbbbbb_20260101_+\n" in body and "    image  http://i/g/\n" in body
    assert f"    commit {GOODSHA}\n" in body and "    image  http://i/b/\n" in body
    assert f"    link   https://git.example.org/commit/{BAD}\n" in body
    assert "bisect: buildset 12 http://bb.example.org/#/buildrequests/31\n" in body
    assert "build:  http://bb.example.org/#/builders/5/builds/2" in body
    # as JSON text too; a build without the property (or with junk) is no mail
    assert texts.parse_regression(json.dumps(prop))["bad"]["image_url"] == "http://i/b/"
    assert texts.parse_regression({**prop, "bisect": None})["bisect"] == ""
    assert RegressionFormatter(ctx()).mail_for_build(master, {"properties": {}, "url": "u"}) is None
    assert texts.parse_regression("{not json") is None


class FakeData:
    """Buildbot's data API answers for one failed build (the shape master.data.get returns)."""

    def __init__(self, steps, logs, contents):
        self.answers = {"steps": steps, "logs": logs, "contents": contents}

    def get(self, path):
        return defer.succeed(self.answers[path[-1]])


class FakeMaster:
    def __init__(self, data):
        self.data = data
        self.config = type("C", (), {"buildbotURL": "http://bb.example.org/"})()


def test_build_failed_mail_names_the_first_compiler_error_and_log_url():
    steps = [{"stepid": 1, "number": 0, "name": "git", "results": 0, "state_string": "ok"},
             {"stepid": 2, "number": 3, "name": "compile", "results": 2,
              "state_string": "failed: drivers/gpu/x.c:3:9: error: 'y' undeclared\r\nBcc: v@example.com"}]
    logs = [{"name": "errors", "slug": "errors", "logid": 7, "type": "s"},
            {"name": "stdio", "slug": "stdio", "logid": 8, "type": "s"}]
    master = FakeMaster(FakeData(steps, logs, {"content": "o/w/build/drivers/gpu/x.c:3:9: error: 'y'\n"}))
    build = {"buildid": 4, "builderid": 2, "number": 6, "results": 2, "url": "http://bb.example.org/#/builders/2/builds/6",
             "builder": {"name": "drm-tip"},
             "properties": {"branch": ["drm-tip", "s"], "got_revision": [BAD, "s"], "project": ["drm-intel", "s"]}}
    mail = BuildFailedFormatter(ctx()).mail_for_build(master, build).result
    msg, wire, _ = rendered(mail)
    assert "\nBcc:" not in wire.split("\n\n", 1)[0]
    assert msg["Subject"].startswith(f"[build] drm-tip {BAD[:12]} failed: drivers/gpu/x.c:3:9: error:")
    body = msg.get_content()
    assert "First compiler error:\n    drivers/gpu/x.c:3:9: error: 'y' undeclared Bcc: v@example.com\n" in body
    assert "errors log: http://bb.example.org/#/builders/2/builds/6/steps/3/logs/errors\n" in body
    assert "full log:   http://bb.example.org/#/builders/2/builds/6/steps/3/logs/stdio\n" in body
    # a build the bisect asked for is a skip of that bisect, not a broken branch
    build["properties"]["bisect_id"] = ["x", "bisect"]
    assert BuildFailedFormatter(ctx()).mail_for_build(master, build).result is None


@pytest.mark.parametrize("text,ok", [
    ("a@example.org", True), ("Jörg Rödel <joro@8bytes.org>", True), ("a@b", False), ("", False),
    ("a@example.org, b@example.org", False), ("x\r\nBcc: b@example.org <a@example.org>", False),
    ("a@example.org@evil.example.com", False), ("<a@example.org> <b@example.org>", False),
])
def test_address_parsing(text, ok):
    assert compose.looks_like_address(text) is ok


def test_outbox_keeps_mails_until_delivered_and_refused_ones_apart(tmp_path):
    box = Outbox(tmp_path)
    first = box.put("Subject: one\n\nbody\n", ["a@example.org"])
    box.put("Subject: two\n\nbody\n", ["b@example.org"])
    assert [e.recipients for e in Outbox(tmp_path).pending()] == [["a@example.org"], ["b@example.org"]]
    box.failed_attempt(first, "ConnectionRefusedError")
    again = Outbox(tmp_path).pending()[0]  # a new master process reads the same queue
    assert (again.attempts, again.last_error) == (1, "ConnectionRefusedError")
    box.delivered(again)
    second = box.pending()[0]
    kept = box.refused(second, "550 no such user")
    assert box.pending() == [] and json.loads(kept.read_text())["last_error"] == "550 no such user"


def test_retry_backoff_doubles_and_is_bounded():
    n = KernelMailNotifier.__new__(KernelMailNotifier)
    n.retry_first, n.retry_max = 5.0, 600.0
    delays = []
    for failures in range(1, 12):
        n._failures = failures
        delays.append(n.retry_delay())
    assert delays[:4] == [5, 10, 20, 40] and max(delays) == 600 and delays[-1] == 600


NOTIFY = '\n[notify]\nsmtp = "mail.example.org:587"\nfrom = "bb@example.org"\nto = ["list@example.org"]\n'


def test_notify_settings_defaults():
    s = settings.parse(GOOD + NOTIFY)
    assert s.notify.to_json() == {"smtp": "mail.example.org:587", "user": "", "password_file": "", "starttls": False,
                        "from": "bb@example.org", "to": ["list@example.org"],
                        "events": ["build-failed", "regression", "culprit"], "cc_culprit": False}
    assert settings.parse(GOOD).notify is None


@pytest.mark.parametrize("change,expected", [
    ('smtp = "mail.example.org"', "[notify].smtp: 'mail.example.org' is not host:port; write the mail server as"),
    ('smtp = "mail.example.org:99999"', "[notify].smtp: 'mail.example.org:99999': port 99999 is not 1-65535"),
    ('from = "bb@example.org\\nBcc: x@example.org"', "[notify].from: 'bb@example.org\\nBcc: x@example.org' is not a "
                                                    "mail address; write"),
    ('to = ["list@example.org", "nobody"]', "[notify].to: 'nobody' is not a mail address"),
    ('to = []', "[notify].to: expected a non-empty list of mail addresses, got []"),
    ('events = ["culprit", "boot-failed"]', "[notify].events: expected a list drawn from ['build-failed', "
                                            "'regression', 'culprit'], got ['culprit', 'boot-failed']"),
    ('user = "bb"', "[notify].password_file: missing; user = 'bb' needs a password"),
    ('user = "bb"\npassword_file = "smtp.pw"', "[notify].password_file: cannot read "),
    ('password_file = "smtp.pw"', "[notify].user: missing"),
    ('cc_culprit = "yes"', "[notify].cc_culprit: expected true or false"),
    ('smtp_host = "x"', "[notify]: unknown key 'smtp_host'"),
])
def test_bad_notify_settings_name_the_key_and_the_fix(tmp_path, change, expected):
    text = GOOD + NOTIFY
    key = change.split(" =")[0]
    lines = [line for line in text.splitlines() if not line.startswith(key + " =")]
    with pytest.raises(settings.SettingsError) as e:
        settings.parse("\n".join(lines) + "\n" + change + "\n", str(tmp_path / "s.toml"))
    out = str(e.value)
    assert expected in out, out


def test_password_file_relative_to_the_settings_file(tmp_path):
    (tmp_path / "smtp.pw").write_text("secret\n")
    s = settings.parse(GOOD + NOTIFY + 'user = "bb"\npassword_file = "smtp.pw"\n', str(tmp_path / "s.toml"))
    assert s.notify.user == "bb"


def test_master_config_adds_the_mail_reporter_with_its_generators(tmp_path):
    from buildbot_kernel.master.config import make_config

    (tmp_path / "smtp.pw").write_text("s3cret\n")
    events = 'events = ["build-failed", "culprit"]\ncc_culprit = true\nstarttls = true\n'
    path = tmp_path / "settings.toml"
    path.write_text(GOOD + NOTIFY + 'user = "bb"\npassword_file = "smtp.pw"\n' + events)
    c = make_config(str(tmp_path / "master"), str(path))
    [svc] = [s for s in c["services"] if isinstance(s, KernelMailNotifier)]
    kw = svc._config_kwargs
    assert (kw["relayhost"], kw["smtpPort"], kw["smtpUser"], kw["smtpPassword"], kw["useTls"]) == (
        "mail.example.org", 587, "bb", "s3cret", True)
    assert kw["sendToInterestedUsers"] is False  # recipients are ours: never the commit authors of a push
    assert [g.event for g in kw["generators"]] == ["build-failed", "culprit"]
    assert kw["generators"][0].builders == ["drm-intel-fixes"] and kw["generators"][1].builders == ["bisect"]
    path.write_text(GOOD)
    assert not any(isinstance(s, KernelMailNotifier) for s in make_config(str(tmp_path / "m2"), str(path))["services"])


def test_build_failed_mail_falls_back_to_the_errors_log():
    steps = [{"stepid": 2, "number": 1, "name": "compile", "results": 2, "state_string": "make (failure)"}]
    logs = [{"name": "errors", "slug": "errors", "logid": 7, "type": "s"}]
    master = FakeMaster(FakeData(steps, logs, {"content": "o\nodrivers/gpu/x.c:3:9: error: 'y'\noanother\n"}))
    build = {"buildid": 4, "builderid": 2, "number": 6, "results": 2, "url": "u", "builder": {"name": "drm-tip"},
             "properties": {}}
    mail = BuildFailedFormatter(ctx()).mail_for_build(master, build).result
    assert "First compiler error:\n    drivers/gpu/x.c:3:9: error: 'y'\n" in mail.body
    assert mail.subject == "[build] drm-tip failed: drivers/gpu/x.c:3:9: error: 'y'"


def test_range_and_reproducer_name_the_commits_the_bisect_resolved_not_moving_branch_names():
    r = result()
    r["request"].update(good=["drm-tip~8"], bad="drm-tip")
    mail = bisect_mail(ctx(), r, bisect_log=LOG, build_url="u")
    assert f"range:    good {GOODSHA} .. bad {BAD}\n" in mail.body
    assert f"--good {GOODSHA} --bad {BAD} --index http://images.example.org/index.json --build x86_64" in mail.body
    # a log without its start line (cannot happen for a finished bisect): the request as given
    mail = bisect_mail(ctx(), r, bisect_log="# nothing\n", build_url="u")
    assert "range:    good drm-tip~8 .. bad drm-tip\n" in mail.body


def test_readme_example_is_what_the_formatter_renders():
    """README.md "Notifications" shows a culprit mail; it must stay the formatter's real output."""
    from pathlib import Path

    bad, good = "4f1b2c3d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"
    culprit, parent = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
    images = "http://kernels.example.org:8011/drm-tip/6.10.0-rc3-drm-tip_"
    c = ctx(base_url="http://kernels.example.org:8011",
            web_urls={"drm-intel": "https://gitlab.freedesktop.org/drm/i915/kernel/-/commit/{sha}"},
            builds={"x86_64": settings.Build(name="x86_64", arch="x86_64", config="defconfig",
                                    fragments=["configs/i915.config"])})
    r = {"status": "done", "verified": True, "tests": 4, "builds": 2,
         "request": {"repository": "drm-intel", "url": "https://gitlab.freedesktop.org/drm/i915/kernel.git",
                     "branch": "drm-tip", "good": [good], "bad": bad, "test": "boot", "command": "true",
                     "mode": "boot", "build_config": "x86_64"},
         "first_bad": {"sha": culprit, "subject": "drm/i915/display: use the new watermark helpers",
                       "author": "Jane Developer <jane@example.org>", "date": "2026-07-18T09:41:07+00:00",
                       "image_url": images + "1a2b3c_20260718_+/"},
         "last_good": {"sha": parent, "subject": "drm/i915/gt: tidy up the reset path",
                       "image_url": images + "0f1e2d_20260718_+/"}}
    manifest = "drm-tip: 2026y-07m-{}d-12h-00m-00s UTC integration manifest"
    log = (f"# bad: [{bad}] {manifest.format(18)}\n# good: [{good}] {manifest.format(17)}\n"
           f"git bisect start '{bad}' '{good}'\n"
           f"# good: [{parent}] drm/i915/gt: tidy up the reset path\ngit bisect good {parent}\n"
           f"# bad: [{culprit}] drm/i915/display: use the new watermark helpers\ngit bisect bad {culprit}\n"
           f"# first bad commit: [{culprit}] drm/i915/display: use the new watermark helpers\n")
    mail = bisect_mail(c, r, bisect_log=log, build_url="http://buildbot.example.org:8010/#/builders/7/builds/42",
                       owner="regression watch: boot on drm-tip", committer="Rodrigo Vivi <rodrigo.vivi@example.org>",
                       compiler="gcc (Debian 12.2.0-14) 12.2.0")
    msg = rendered(mail)[0]
    shown = "".join(f"{h}: {msg[h]}\n" for h in ("From", "To", "Cc", "Subject")) + "\n" + msg.get_content()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "```\n" + shown + "```\n" in readme


def test_commit_links_only_for_hex_shas():
    assert texts.commit_link("https://g.example.org/c/{sha}", BAD) == f"https://g.example.org/c/{BAD}"
    assert texts.commit_link("https://g.example.org/c/{sha}", "../../evil?x=") == ""
    assert texts.commit_link("", BAD) == "" and texts.commit_link("https://g.example.org/", BAD) == ""
