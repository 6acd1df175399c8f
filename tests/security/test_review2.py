"""Holes of the second hostile review, each driven through the real part a lab user reaches: the real
settings parser (what a master accepts and then shows to everyone who may read builds) and the real
force-form checks of a running master.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import defer
from twisted.trial import unittest as trial

from buildbot_kernel import settings
from buildbot_kernel.resources import shipped

SHIPPED = shipped("settings.toml").read_text()
SECRET = "glpat-Zq8sEcReT0ken"
REPO_URL = "https://gitlab.freedesktop.org/drm/i915/kernel.git"


def _refused(text: str, path: Path) -> str:
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(text, str(path))
    return str(e.value)


# --- credentials inside a URL everyone is shown ------------------------------------------------------

@pytest.mark.parametrize("userinfo", [f"oauth2:{SECRET}", f"{SECRET}", f"alice:{SECRET}"])
def test_a_repository_url_with_a_credential_is_refused_without_echoing_it(tmp_path, userinfo):
    """The hole: a ``[[repository]].url`` such as ``https://oauth2:TOKEN@host/linux.git`` was accepted,
    and the URL is shown to everyone who may read builds (anonymous by default): the bisect step's state
    string ("fetching <url>") and its request log, the changes and source stamps of the REST API, the
    reproducer published beside every image and the culprit mail's ``git clone`` line."""
    text = SHIPPED.replace(REPO_URL, REPO_URL.replace("https://", f"https://{userinfo}@"), 1)
    assert text != SHIPPED
    msg = _refused(text, tmp_path / "settings.toml")
    assert "[[repository]] ('drm-intel').url:" in msg, msg
    assert "credential helper" in msg, msg  # says what to do instead
    assert SECRET not in msg, msg  # the error (checkconfig output, logs) does not repeat the secret


@pytest.mark.parametrize("key, url", [
    ("base_url", f"http://u:{SECRET}@kernels.example.org:8011"),
])
def test_a_published_images_url_with_a_credential_is_refused(tmp_path, key, url):
    """``[images].base_url`` is written into every index.json entry the image server hands to anyone."""
    text = SHIPPED.replace('base_url = "http://localhost:8011"', f'{key} = "{url}"', 1)
    msg = _refused(text, tmp_path / "settings.toml")
    assert f"[images].{key}:" in msg and SECRET not in msg, msg


@pytest.mark.parametrize("url", [REPO_URL, "ssh://git@gitlab.example.org/linux.git", "git@gitlab.example.org:linux.git",
                                 "/srv/git/linux.git", "file:///srv/git/linux.git", "git://git.kernel.org/linux.git"])
def test_urls_without_a_secret_are_still_fine(tmp_path, url):
    settings.parse(SHIPPED.replace(REPO_URL, url, 1), str(tmp_path / "settings.toml"))


# --- a lock for every tester name a REST call sends ----------------------------------------------------

@pytest.mark.parametrize("tester", ["Z" * 100_000, "no-such-machine", "../x", "skl-1 "])
def test_a_bisect_naming_an_unknown_tester_makes_no_machine_lock(tester):
    """The hole: the bisect builder's locks were computed from the request's tester as sent, and an unknown
    name got a master lock of its own.  Buildbot keeps every lock it ever made, so each bisect request
    with another made-up tester (its start step then refused it) grew the master for good, by the size of
    the name."""
    from buildbot_kernel.farm.driver import lock_name
    from buildbot_kernel.master.bisect_config import machine_locks

    classes = {"skl": ["skl-1", "skl-2"], "skl-1": ["skl-1"], "skl-2": ["skl-2"]}
    assert machine_locks(tester, classes) == []
    [access] = machine_locks("skl-1", classes)  # a configured machine still holds its lock
    assert access.lockid.name == lock_name("skl-1")


# --- which user names have accounts, told by the time a login takes -----------------------------------

def test_a_login_of_an_unknown_user_takes_as_long_as_a_wrong_password():
    """The hole: an unknown user name was checked against a dummy hash of bcrypt cost 4, a real account
    against its own (``htpasswd -B`` makes cost 5, ``-C 12`` is common): with cost 10 accounts a wrong
    password took ~64 times as long as an unknown name, so anyone could list the accounts by timing the
    login page.  An unknown name now costs a check at the file's own cost."""
    import time

    import bcrypt

    from buildbot_kernel import htpasswd

    users = {"alice": bcrypt.hashpw(b"right", bcrypt.gensalt(10)), "bob": bcrypt.hashpw(b"b", bcrypt.gensalt(10))}

    def seconds(user: str) -> float:
        t0 = time.perf_counter()
        assert not htpasswd.check_password(users, user, b"wrong")
        return time.perf_counter() - t0

    known = min(seconds("alice") for _ in range(3))
    unknown = min(seconds("mallory") for _ in range(3))
    assert unknown > known / 4, (known, unknown)  # the same cost: equal up to noise; before, ~1/64
    assert not htpasswd.check_password(users, "mallory", b"right")  # another account's password: no way in
    assert not htpasswd.check_password({}, "alice", b"right")


# --- a flood of logins starving the master's threads ---------------------------------------------------

class LoginFlood(trial.TestCase):
    """The hole: every ``/auth/login`` ran its bcrypt check in the reactor's shared thread pool, which also
    runs the master's git commands, image tree scans and bisect steps.  Anyone who reaches the login page
    (no account needed) kept all its threads busy with a flood of logins, and the master's own work
    waited behind them.  Now at most LOGIN_CHECKS checks run at once; past LOGIN_QUEUE waiting ones a
    login is refused at once."""

    def setUp(self):
        import shutil
        import tempfile

        import bcrypt

        work = tempfile.mkdtemp(prefix="bbk-login-")  # trial's mktemp() would write into the checkout
        self.addCleanup(shutil.rmtree, work, True)
        self.path = f"{work}/users.htpasswd"
        with open(self.path, "w") as f:
            f.write(f"alice:{bcrypt.hashpw(b'right', bcrypt.gensalt(10)).decode()}\n")

    @defer.inlineCallbacks
    def test_the_masters_other_threads_are_not_starved(self):
        import time

        from twisted.cred.credentials import UsernamePassword
        from twisted.internet import reactor, threads

        from buildbot_kernel.master import auth

        checker = auth.BcryptHtpasswdChecker(self.path)
        flood = [defer.maybeDeferred(checker.requestAvatarId, UsernamePassword(b"alice", b"wrong"))
                 for _ in range(3 * reactor.getThreadPool().max)]
        t0 = time.monotonic()
        yield threads.deferToThread(lambda: None)  # the master's next job in the pool
        waited = time.monotonic() - t0
        results = yield defer.DeferredList(flood, consumeErrors=True)
        total = time.monotonic() - t0
        assert all(not ok for ok, _ in results)  # every wrong password refused
        assert waited < total / 3, (waited, total)  # before: it waited behind the whole flood

    @defer.inlineCallbacks
    def test_past_the_queue_a_login_is_refused_at_once(self):
        from twisted.cred.credentials import UsernamePassword
        from twisted.cred.error import UnauthorizedLogin

        from buildbot_kernel.master import auth

        checker = auth.BcryptHtpasswdChecker(self.path)
        flood = [defer.maybeDeferred(checker.requestAvatarId, UsernamePassword(b"alice", b"wrong"))
                 for _ in range(auth.LOGIN_CHECKS + auth.LOGIN_QUEUE)]
        refused = defer.maybeDeferred(checker.requestAvatarId, UsernamePassword(b"alice", b"right"))
        assert refused.called  # not queued: answered without a check
        yield self.assertFailure(refused, UnauthorizedLogin)
        yield defer.DeferredList(flood, consumeErrors=True)
        user = yield checker.requestAvatarId(UsernamePassword(b"alice", b"right"))  # the flood is over
        assert user == b"alice"


# --- progress reports flooding the master's state file -------------------------------------------------

def test_a_repeated_progress_report_writes_nothing(tmp_path):
    """The hole: a ``running`` or ``kexec`` report keeps its token live (only a final result uses it), and
    each one rewrote and fsynced the farm's state file on the master's reactor thread.  The candidate
    kernel runs a commit's code and has the machine key and the token on its command line, so a commit
    could post them in a loop and hold up the master.  A report that does not move the attempt forward
    (assigned -> fetched -> kexec -> running) is answered ok and changes nothing."""
    from buildbot_kernel.farm import instructions as ins
    from buildbot_kernel.farm.registry import Registry, write_state
    from buildbot_kernel.settings import Machine

    writes = []

    def writer(path, text):
        writes.append(path)
        write_state(path, text)

    key = "Kx9-secret-machine-key-0123456789-abcdef"
    reg = Registry(["m1"], tmp_path / "state.json", keys={"m1": key}, writer=writer)
    image = {"name": "6.1.0-good", "url": "http://h/i/", "files": {"vmlinuz": {"sha256": "ab" * 32}}}
    a = ins.make_assignment(Machine(name="m1"), image, "true", "boot", "http://127.0.0.1:1")
    reg.assign(a)
    reg.boot_request("m1")
    assert reg.report("m1", {"result": "kexec", "token": a.token}) == (True, "ok")
    assert reg.report("m1", {"result": "running", "token": a.token}) == (True, "ok")
    before = len(writes)
    for result in ("running", "kexec") * 500:
        assert reg.report("m1", {"result": result, "token": a.token}) == (True, "ok")
    assert len(writes) == before, len(writes) - before
    assert reg.assignment("m1").phase == "running"  # never back to kexec
    assert reg.report("m1", {"result": "good", "token": a.token}) == (True, "ok")  # the verdict still counts
    assert reg.get("m1").last_report["result"] == "good" and len(writes) == before + 1
