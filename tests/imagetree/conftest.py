"""Shared fixtures: a tree of fixture images and the embedded server running in its own process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    def __init__(self, root: Path, access_log: Path):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "buildbot_kernel.imagetree.server", "--root", str(root), "--port", "0",
             "--access-log", str(access_log)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"at (http://\S+/)", line)
            if m:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"image server did not start: {line!r}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """serve(root) -> base URL of a running embedded server for that root (stopped after the module);
    its access log is ``<root>/../access.log``."""
    servers = []

    def start(root):
        s = ServerProcess(root, Path(root).parent / "access.log")
        servers.append(s)
        return s.url

    yield start
    for s in servers:
        s.stop()
