"""The one exit-status rule (0 good, 125 skip, 1-127 bad, anything else no verdict), in Python on the
master and in the farm's stage 2 shell library, which cannot import Python: both must agree everywhere."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from buildbot_kernel.bisect import tester
from buildbot_kernel.bisect.engine import BAD, GOOD, SKIP
from buildbot_kernel.bisect.tester import exit_status, verdict_for_exit
from buildbot_kernel.resources import scripts_dir

STATUSES = range(0, 256)


def python_verdict(status: int) -> str:
    try:
        return verdict_for_exit(status)
    except tester.TesterAbort as e:  # the module's name: pytest would try to collect a Test* class
        assert e.status == exit_status(status)
        return "error"


def test_the_rule():
    got = {s: python_verdict(s) for s in STATUSES}
    assert got[0] == GOOD and got[125] == SKIP
    assert {got[s] for s in range(1, 128) if s != 125} == {BAD}
    assert {got[s] for s in range(128, 256)} == {"error"}
    assert python_verdict(-9) == "error" and exit_status(-9) == 137  # killed by SIGKILL, as a shell says


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_stage2_shell_applies_the_same_rule(shell):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    lib = scripts_dir() / "stage1" / "bbk-lib.sh"
    argv = [shell, "sh"] if shell == "busybox" else [shell]
    script = f'. "{lib}"\nfor s in {" ".join(map(str, STATUSES))} 300 -1 x ""; do echo "$s=$(bbk_verdict "$s")"; done\n'
    out = subprocess.run([*argv, "-c", script], capture_output=True, text=True, timeout=60, check=True).stdout
    answers = dict(line.split("=", 1) for line in out.splitlines())
    assert {int(s): answers[str(s)] for s in STATUSES} == {s: python_verdict(s) for s in STATUSES}
    assert answers["300"] == answers["-1"] == answers["x"] == answers[""] == "error"  # never "bad" by accident
