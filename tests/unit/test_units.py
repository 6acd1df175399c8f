"""`buildbot-kernel units`: systemd units with this installation's paths, which systemd accepts."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from buildbot_kernel.cli import CommandError, main
from buildbot_kernel.commands import units
from buildbot_kernel.commands.units import render, unit_vars


def _units(tmp_path, capsys, *extra) -> dict[str, str]:
    out = {}
    for kind in ("master", "worker"):
        assert main(["units", "--dir", str(tmp_path / "master"), "--only", kind, *extra]) == 0
        out[kind] = capsys.readouterr().out
    return out


def test_units_name_the_directories_and_this_installations_tools(tmp_path, capsys):
    (tmp_path / "master").mkdir()
    units = _units(tmp_path, capsys, "--settings", str(tmp_path / "lab.toml"))
    bin_dir = Path(sys.executable).parent
    assert f"ExecStart={bin_dir}/buildbot start --nodaemon {tmp_path}/master\n" in units["master"]
    assert f"ExecReload={bin_dir}/buildbot reconfig {tmp_path}/master\n" in units["master"]
    assert f"Environment=BUILDBOT_KERNEL_SETTINGS={tmp_path}/lab.toml\n" in units["master"]
    assert f"ExecStart={bin_dir}/buildbot-worker start --nodaemon {tmp_path}/worker\n" in units["worker"]
    assert "WorkingDirectory=" in units["worker"] and "BUILDBOT_KERNEL_SETTINGS" not in units["worker"]


def test_systemd_accepts_the_units(tmp_path, capsys):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    (tmp_path / "master").mkdir()
    (tmp_path / "worker").mkdir()
    units = _units(tmp_path, capsys)
    paths = []
    for kind, text in units.items():
        paths.append(tmp_path / f"buildbot-kernel-{kind}.service")
        paths[-1].write_text(text)
    r = subprocess.run([analyze, "verify", *map(str, paths)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # and it would notice a broken one
    paths[0].write_text(units["master"].replace("ExecStart=", "ExecStart=no-such-tool-xyz "))
    assert subprocess.run([analyze, "verify", str(paths[0])], capture_output=True, timeout=60).returncode != 0


@pytest.mark.parametrize("option, value", [("--dir", "/srv/my master"), ("--dir", "/srv/100%"),
                                           ("--settings", "relative.toml"), ("--user", "root\nExecStart=x")])
def test_values_systemd_would_misread_are_refused(option, value):
    kw = {"--dir": "/srv/master", "--settings": "", "--user": "buildbot"}
    kw[option] = value
    with pytest.raises(ValueError, match=option):
        unit_vars(Path(kw["--dir"]), Path("/srv/worker"), kw["--user"], "buildbot", kw["--settings"])


def test_unknown_user_is_one_line(tmp_path):
    with pytest.raises(CommandError, match="no such user"):
        units.run(argparse.Namespace(dir=str(tmp_path), worker_dir=None, user="no-such-user-xyz", group=None,
                                     settings=None, only=None))


def test_render_without_a_master_unit_does_not_order_after_it():
    v = unit_vars(Path("/srv/master"), Path("/srv/worker"), "buildbot", "buildbot")
    assert "buildbot-kernel-master.service" not in render("worker", with_master=False, **v).split("[Service]")[0]
    assert "After=network-online.target buildbot-kernel-master.service" in render("worker", with_master=True, **v)
