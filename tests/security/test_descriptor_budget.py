"""The listeners' caps only protect the master if its open-file limit leaves room above them: the
master raises its soft limit (to room above them, within the hard one), and the systemd unit sets both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from buildbot_kernel.commands.units import render, unit_vars
from buildbot_kernel.master.fdlimit import ROOM, WANTED

resource = pytest.importorskip("resource")

PROBE = """
import resource, sys
from buildbot_kernel.master.fdlimit import raise_open_files
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
print(raise_open_files(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""


def test_the_master_raises_its_soft_open_file_limit():
    """The hole: a master started with a soft limit of 1024 (the usual default) ran out of descriptors
    with its caps' 896 connections and its builds' files together."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    reported, soft, hard = (int(v) for v in out)
    assert soft == reported
    assert soft == min(hard, ROOM * WANTED) if hard != resource.RLIM_INFINITY else soft == ROOM * WANTED
    assert soft >= WANTED or soft == hard  # room for the caps, unless the hard limit itself is lower


def test_children_do_not_inherit_a_million_descriptors():
    """Every child inherits the soft limit; raised to a hard limit of 1048576, a test command or QEMU that
    closes every descriptor up to it, or uses select(), crawls or breaks."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert int(out[1]) <= ROOM * WANTED


def test_the_systemd_unit_sets_the_limit():
    v = unit_vars(Path("/srv/master"), Path("/srv/worker"), "buildbot", "buildbot")
    limit = [line for line in render("master", with_master=True, **v).splitlines() if line.startswith("LimitNOFILE=")]
    assert limit and int(limit[0].split("=")[1]) >= WANTED
