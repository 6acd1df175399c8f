"""The settings of a server on a lab network: listeners, [auth], named tests, shipped passwords."""

from pathlib import Path

import bcrypt
import pytest

from buildbot_kernel import htpasswd, settings
from buildbot_kernel.resources import shipped

BASE = """
[server]
web_port = 8010
{server}
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
password = "{password}"
{extra}
"""
AUTH = '[auth]\nhtpasswd = "users.htpasswd"\nadmins = ["alice"]\nmaintainers = ["bob"]\n'


def text(server="", password="s3cret-worker", extra=""):
    return BASE.format(server=server, password=password, extra=extra)


def write_htpasswd(path: Path, **users):
    path.write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode()}\n"
                            for u, p in users.items()))


def problems(body, tmp_path):
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(body, str(tmp_path / "s.toml"))
    return str(e.value)


def test_every_listener_defaults_to_bind(tmp_path):
    s = settings.parse(text('bind = "127.0.0.2"\nweb_bind = "::1"'), str(tmp_path / "s.toml"))
    assert (s.listener("web_bind"), s.listener("worker_bind"), s.listener("image_bind")) == (
        "::1", "127.0.0.2", "127.0.0.2")
    assert s.auth is None and s.tests == ()


@pytest.mark.parametrize("key", ["bind", "web_bind", "worker_bind", "image_bind"])
@pytest.mark.parametrize("value", ["localhost", "0.0.0.0; rm -rf /", "300.1.1.1", ""])
def test_a_bind_that_is_not_an_ip_address_is_refused(tmp_path, key, value):
    if value == "" and key != "bind":
        return  # "" means "use bind" for the per-listener keys
    msg = problems(text(f'{key} = "{value}"'), tmp_path)
    assert f"[server].{key}: " in msg and "address" in msg


def test_web_off_loopback_needs_auth(tmp_path):
    msg = problems(text('web_bind = "0.0.0.0"'), tmp_path)
    assert "the web UI listens on 0.0.0.0 (not loopback) but there is no [auth] section" in msg
    write_htpasswd(tmp_path / "users.htpasswd", alice="a-password")
    s = settings.parse(text('web_bind = "0.0.0.0"', extra=AUTH), str(tmp_path / "s.toml"))
    assert s.auth.to_json() == {"htpasswd": "users.htpasswd", "admins": ["alice"], "maintainers": ["bob"],
                      "anonymous": "read"}


def test_image_server_alone_off_loopback_needs_no_auth(tmp_path):
    s = settings.parse(text('image_bind = "0.0.0.0"'), str(tmp_path / "s.toml"))
    assert s.listener("image_bind") == "0.0.0.0" and s.listener("web_bind") == "127.0.0.1"


@pytest.mark.parametrize("password", sorted(settings.SHIPPED_WORKER_PASSWORDS))
def test_worker_port_off_loopback_refuses_shipped_passwords(tmp_path, password):
    msg = problems(text('worker_bind = "0.0.0.0"', password=password), tmp_path)
    assert f"[[worker]] ('w').password: the worker port listens on 0.0.0.0 (not loopback) and {password!r}" in msg
    settings.parse(text(password=password), str(tmp_path / "s.toml"))  # on loopback: fine


def test_the_shipped_settings_password_is_a_shipped_default():
    example = shipped("settings.toml")
    assert {w.password for w in settings.load(example).workers} <= settings.SHIPPED_WORKER_PASSWORDS


def test_htpasswd_must_exist(tmp_path):
    msg = problems(text(extra=AUTH), tmp_path)
    assert "[auth].htpasswd: cannot read" in msg and "htpasswd -B -c" in msg


def test_htpasswd_lines_must_be_bcrypt(tmp_path):
    (tmp_path / "users.htpasswd").write_text("alice:plain-text\nbob:$apr1$abc$def\n")
    msg = problems(text(extra=AUTH), tmp_path)
    assert "line 1 (user 'alice'): not a bcrypt hash" in msg and "line 2 (user 'bob')" in msg
    assert "plain-text" not in msg  # never echo what may be a password


def test_auth_keys_are_checked(tmp_path):
    write_htpasswd(tmp_path / "users.htpasswd", alice="x")
    msg = problems(text(extra=AUTH.replace('maintainers = ["bob"]', 'maintainers = "bob"\nanonymous = "all"')),
                   tmp_path)
    assert "[auth].maintainers: expected a list of user names" in msg
    assert "[auth].anonymous: expected one of ['read', 'none']" in msg
    assert "[auth].htpasswd: missing" in problems(text(extra="[auth]\nadmins = []"), tmp_path)


def test_named_tests(tmp_path):
    s = settings.parse(text(extra='[[test]]\nname = "proc"\ncommand = "true"\n'), str(tmp_path / "s.toml"))
    assert s.test("proc") == settings.Test(name="proc", command="true", mode="test", timeout=600, branches=(),
                                           testers=())
    msg = problems(text(extra='[[test]]\nname = "p"\ncommand = " "\nmode = "run"\ntimeout = 0\n'), tmp_path)
    assert "[[test]] #1 ('p').command: expected a non-empty shell command" in msg
    assert "[[test]] #1 ('p').mode: expected one of ['boot', 'test']" in msg
    assert "[[test]] #1 ('p').timeout: expected seconds from 1 to 604800" in msg


def test_bcrypt_checks_and_plain_text_never_matches():
    users, bad = htpasswd.parse(f"alice:{bcrypt.hashpw(b'right', bcrypt.gensalt(4)).decode()}\n"
                                "bob:plain\nanonymous:$2y$04$abcdefghijklmnopqrstuuH0ZlP0eWz5/Oq3x2ZRgxQxv8r5QZ5yq\n")
    assert set(users) == {"alice"} and len(bad) == 2 and "reserved" in bad[1]
    assert htpasswd.check_password(users, "alice", b"right")
    assert not htpasswd.check_password(users, "alice", b"wrong")
    assert not htpasswd.check_password(users, "alice", users["alice"])  # the hash is not the password
    assert not htpasswd.check_password(users, "bob", b"plain")
    assert not htpasswd.check_password(users, "carol", b"right")
    assert not htpasswd.check_password(users, "alice", b"right\0")


def test_a_long_password_works_as_htpasswd_hashed_it():
    users = {"alice": bcrypt.hashpw(b"p" * 72, bcrypt.gensalt(4))}  # what `htpasswd -B` stores for 80 bytes
    assert htpasswd.check_password(users, "alice", b"p" * 80)
    assert not htpasswd.check_password(users, "alice", b"p" * 71)


def test_an_unreadable_file_accepts_nobody(tmp_path):
    assert not htpasswd.check_file(str(tmp_path / "missing"), "alice", b"x")
    (tmp_path / "latin1").write_bytes(b"alice:\xff\n")
    assert not htpasswd.check_file(str(tmp_path / "latin1"), "alice", b"x")
