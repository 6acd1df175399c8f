"""``buildbot-kernel run``'s set-up: an admin's master.cfg is kept, the settings the master reads are
the ones the local worker is made from."""

import subprocess
import sys

import pytest

from buildbot_kernel import settings
from buildbot_kernel.cli import CommandError
from buildbot_kernel.commands import run
from buildbot_kernel.resources import shipped

SETTINGS = shipped("settings.toml").read_text()


def test_master_cfg_installed_kept_when_changed(tmp_path, capsys):
    assert run.install_master_cfg(tmp_path) == "installed"
    assert run.install_master_cfg(tmp_path) == "unchanged"
    mine = (tmp_path / "master.cfg").read_text() + "\nBuildmasterConfig['www']['auth'] = None  # mine\n"
    (tmp_path / "master.cfg").write_text(mine)
    assert run.install_master_cfg(tmp_path) == "kept"
    assert (tmp_path / "master.cfg").read_text() == mine
    assert "keeping" in capsys.readouterr().out


def test_environment_settings_are_what_the_worker_is_made_from(tmp_path):
    mine = tmp_path / "elsewhere.toml"
    mine.write_text(SETTINGS.replace("worker_port = 9989", "worker_port = 9777")
                    .replace('password = "local-worker"', 'password = "from-env"'))
    master = tmp_path / "master"
    subprocess.run([str(run.BIN / "buildbot"), "create-master", "-q", str(master)], check=True)
    s = run.prepare_master(master, None, environ={settings.ENV_VAR: str(mine)})
    assert (s.server.worker_port, s.workers[0].password, s.path) == (9777, "from-env", str(mine))
    with pytest.raises(CommandError, match="disagree"):
        run.settings_path(master, shipped("settings.toml"), environ={settings.ENV_VAR: str(mine)})


def test_without_environment_the_master_directory_settings(tmp_path):
    assert run.settings_path(tmp_path, None, environ={}) == tmp_path / "settings.toml"
    assert (tmp_path / "settings.toml").read_text() == SETTINGS


@pytest.mark.parametrize("bind, address", [("0.0.0.0", "127.0.0.1"), ("10.1.2.3", "10.1.2.3"),
                                           ("::", "[::1]"), ("::1", "[::1]")])
def test_local_worker_connects_where_the_worker_port_listens(tmp_path, bind, address):
    s = settings.parse(SETTINGS.replace('image_port = 8011', f'image_port = 8011\nworker_bind = "{bind}"')
                       .replace('"local-worker"', '"a-real-secret"'), str(tmp_path / "s.toml"))
    assert run.worker_master_address(s) == address


def test_cli_still_wires_run():
    r = subprocess.run([sys.executable, "-m", "buildbot_kernel.cli", "run", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--settings" in r.stdout
