"""The local-command tester (contract): a command decides good / bad / skip for one image.

The command gets the commit and its image in the environment::

    BISECT_SHA        full commit sha
    BISECT_IMAGE      image name (the kernel release string)
    BISECT_IMAGE_URL  the image directory's URL (ends in "/")
    BISECT_IMAGE_DIR  a local directory holding the image's files, downloaded and sha256-checked

and answers with its exit status, as for ``git bisect run``: 0 good, 125 skip, 1..127 other than 125
bad, anything above 127 (including death by a signal) aborts the bisection: such a status means the
test itself broke, and calling that "bad" would send the bisection the wrong way.

A command still running at its timeout is killed with its whole process group (everything it started
that did not leave the group) and the commit is ``skip``: a hung test says nothing about the commit,
and other commits may still decide the range.  Whatever the command left running in its group when it
exits is killed too, so no test outlives its step.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from buildbot_kernel.bisect.engine import BAD, GOOD, SKIP
from buildbot_kernel.errors import BuildbotKernelError

EXIT_SKIP = 125


class TestTimedOut(BuildbotKernelError):
    """The command was still running at its timeout; it and its process group are dead.  Verdict: skip."""

    verdict = SKIP

    def __init__(self, timeout: float):
        super().__init__(f"test command still running after {timeout:g} s: killed with its process group")
        self.timeout = timeout


class TesterAbort(BuildbotKernelError, RuntimeError):
    """The test command exited above 127: stop the bisection, record nothing for this commit."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def exit_status(status: int) -> int:
    """A negative status (Python's and Buildbot's way of saying "killed by signal N") as a shell reports
    it: 128+N."""
    return 128 - status if status < 0 else status


def verdict_for_exit(status: int) -> str:
    """The one exit-status rule (docs/bisect.md, "The test command"; the farm's stage 2 applies it in
    ``bbk_verdict``, scripts/stage1/bbk-lib.sh): 0 good, 125 skip, 1..127 bad, anything else (above 127,
    a death by signal) raises :class:`TesterAbort`: the test itself broke, which is no verdict."""
    status = exit_status(status)
    if status == 0:
        return GOOD
    if status == EXIT_SKIP:
        return SKIP
    if 1 <= status <= 127:
        return BAD
    raise TesterAbort(status, f"test command exited with status {status} (above 127): bisection aborted")


def tester_env(sha: str, image_name: str, image_url: str, image_dir: str | Path,
               base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(
        BISECT_SHA=sha,
        BISECT_IMAGE=image_name,
        BISECT_IMAGE_URL=image_url,
        BISECT_IMAGE_DIR=str(image_dir),
    )
    return env


def run_test_command(command: str, env: Mapping[str, str], cwd: str | Path | None = None,
                     timeout: float | None = None) -> int:
    """Run ``command`` through the shell (it is a command line, as for ``git bisect run``); its status.

    The command runs in a new session, so its process group is its own: at the timeout (raising
    :class:`TestTimedOut`), on Ctrl-C and when it exits, the group is killed, which takes background
    children such as ``sleep 1000 &`` with it.
    """
    proc = subprocess.Popen(command, shell=True, env=dict(env), cwd=cwd, start_new_session=True)
    try:
        status = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise TestTimedOut(timeout) from None
    except BaseException:  # Ctrl-C: its own session does not get the terminal's SIGINT
        _kill_group(proc)
        raise
    _kill_group(proc)  # what it left running in its group
    return status


def _kill_group(proc: subprocess.Popen) -> None:
    """The whole process group: the shell and whatever it started.

    The group id is the shell's pid; Linux does not reuse a pid while a process group of that id still
    has members, so this never hits a stranger even after the shell itself was reaped.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
