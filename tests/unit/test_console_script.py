"""The console script as a user runs it: every sub-command is wired, user errors are one line + exit 2."""

import subprocess
import sys

from buildbot_kernel import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "buildbot_kernel.cli", *args], capture_output=True, text=True,
                          timeout=60)


def test_every_command_is_listed():
    r = run("--help")
    assert r.returncode == 0
    for name in ("run", "stop", "bisect", "index", "images", "snippets", "farm-step"):
        assert f"    {name}" in r.stdout
    assert len(cli.COMMANDS) == len(set(cli.COMMANDS))


def test_bisect_bad_input_is_one_clear_line(tmp_path):
    r = run("bisect", "--repo", str(tmp_path / "nope"), "--good", "v1", "--bad", "v2",
            "--index", str(tmp_path / "index.json"), "--run", "true")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "repo" in r.stderr
