"""master.cfg + settings.toml as an admin meets them: checkconfig errors, and a master with no network."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from buildbot_kernel.resources import shipped

from .harness import BIN, Master, free_port, settings_text, wait_for

pytestmark = pytest.mark.integration


def checkconfig(master_dir, env_settings=None):
    env = Master.env.fget(None)
    if env_settings:
        env = {**env, "BUILDBOT_KERNEL_SETTINGS": str(env_settings)}
    return subprocess.run([str(BIN / "buildbot"), "checkconfig", str(master_dir)], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def master_dir(tmp_path):
    d = tmp_path / "m"
    subprocess.run([str(BIN / "buildbot"), "create-master", "-q", str(d)], check=True)
    shutil.copy(shipped("master.cfg"), d / "master.cfg")
    return d


def test_shipped_settings_pass_checkconfig(master_dir):
    shutil.copy(shipped("settings.toml"), master_dir / "settings.toml")
    r = checkconfig(master_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Config file is good!" in r.stdout


def test_bad_settings_fail_checkconfig_naming_file_and_key(master_dir):
    text = (shipped("settings.toml")).read_text().replace("poll_interval = 300", "poll_interval = -5")
    (master_dir / "settings.toml").write_text(text.replace('build = "x86_64"', 'build = "arm64"'))
    r = checkconfig(master_dir)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"{master_dir / 'settings.toml'}: [[repository]] #1 ('drm-intel').poll_interval: expected a whole " \
           "number of seconds from 1 to 604800, got -5" in out
    assert "no [[build]] named 'arm64'" in out


def test_environment_variable_wins(master_dir, tmp_path):
    (master_dir / "settings.toml").write_text("this is not toml [")
    elsewhere = tmp_path / "other.toml"
    shutil.copy(shipped("settings.toml"), elsewhere)
    assert checkconfig(master_dir, env_settings=elsewhere).returncode == 0
    assert checkconfig(master_dir).returncode != 0


def test_unreachable_repository_starts_and_shows_the_poll_error(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/drm/i915/kernel.git"  # nothing listens there
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    master = Master(tmp_path, settings_text(dead, ["drm-intel-fixes", "drm-tip"], ports, poll=60))
    master.start(ports["web"])
    try:
        names = {b["name"] for b in master.get("builders")["builders"]}
        assert {"drm-intel-fixes", "drm-tip", "heads"} <= names
        build = wait_for(lambda: [b for b in master.builds("heads") if b["complete"]], 60,
                         "the startup heads check")[0]
        assert build["results"] == 2  # FAILURE, in red in the UI
        step = [s for s in master.steps(build["buildid"]) if s["name"] == "heads-drm-intel"][0]
        assert step["state_string"].startswith(f"cannot reach {dead}: ")
        assert master.get("builders") is not None  # still serving after the failure
        import urllib.request

        url = f"http://127.0.0.1:{ports['web']}/plugins/wsgi_dashboards/kernels/page.html"
        with urllib.request.urlopen(url, timeout=10) as r:
            page = r.read().decode()
        assert "Test machines" in page and "No bisect has run yet" in page
        assert 'data-branch="drm-tip"' in page and "not polled yet" in page  # listed before any build
    finally:
        master.stop()


def test_ssh_remote_is_asked_with_the_masters_ssh_settings(tmp_path, monkeypatch):
    """The heads check runs git in the master's environment: GIT_SSH_COMMAND and the SSH agent reach it.
    No network: the "ssh" is a script that records its call and fails at once."""
    marker, ssh = tmp_path / "ssh-called", tmp_path / "fake-ssh"
    ssh.write_text(f'#!/bin/sh\nprintf "%s sock=%s\\n" "$*" "$SSH_AUTH_SOCK" >> {marker}\n'
                   'echo "ssh: connect to host example.invalid port 22: refused by the test script" >&2\nexit 255\n')
    ssh.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(ssh))
    monkeypatch.setenv("GIT_SSH_VARIANT", "ssh")
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    url = "ssh://example.invalid/drm/i915/kernel.git"
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    master = Master(tmp_path, settings_text(url, ["drm-tip"], ports, poll=60))
    master.start(ports["web"])
    try:
        build = wait_for(lambda: [b for b in master.builds("heads") if b["complete"]], 60,
                         "the startup heads check")[0]
        step = [s for s in master.steps(build["buildid"]) if s["name"] == "heads-drm-intel"][0]
        assert step["state_string"].startswith(f"cannot reach {url}: ssh: connect to host example.invalid port 22: "
                                               "refused by the test script")
        calls = marker.read_text()
        assert "git-upload-pack '/drm/i915/kernel.git'" in calls and f"sock={tmp_path / 'agent.sock'}" in calls
    finally:
        master.stop()
