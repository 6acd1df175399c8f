"""A real crossbar WAMP router on loopback, for the tests that run two masters on one message queue.

crossbar pins its own Twisted and autobahn, so scripts/install-deps puts it in a virtual environment of
its own, ``.venv-crossbar`` in the checkout; ``BBK_CROSSBAR`` names another ``crossbar`` executable.
The router serves one realm, ``buildbot``, to anonymous sessions (what Buildbot's WAMP connector speaks),
on 127.0.0.1 only, and is stopped when the session ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from lane_ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
REALM = "buildbot"


def crossbar_bin() -> Path | None:
    for candidate in (os.environ.get("BBK_CROSSBAR"), REPO_ROOT / ".venv-crossbar" / "bin" / "crossbar",
                      shutil.which("crossbar")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def router_config(port: int) -> dict:
    anyone = {"uri": "", "match": "prefix", "allow": {"call": True, "register": True, "publish": True,
                                                      "subscribe": True},
              "disclose": {"caller": False, "publisher": False}, "cache": True}
    return {"version": 2, "controller": {}, "workers": [{
        "type": "router",
        "realms": [{"name": REALM, "roles": [{"name": "anonymous", "permissions": [anyone]}]}],
        "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1"},
                        "url": f"ws://127.0.0.1:{port}/ws"}]}]}


class Router:
    def __init__(self, binary: Path, port: int):
        self.dir = Path(tempfile.mkdtemp(prefix="bbk-crossbar-"))
        self.port = port
        (self.dir / "config.json").write_text(json.dumps(router_config(port)))
        self.log = self.dir / "crossbar.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(binary), "start", "--cbdir", str(self.dir), "--config", "config.json"],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"crossbar exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"crossbar did not listen on {self.port} within {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the controller and its router worker
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@pytest.fixture(scope="session")
def crossbar():
    """One router for the session (skipped, saying how to install it, when crossbar is missing)."""
    binary = crossbar_bin()
    if binary is None:
        pytest.skip("crossbar not found: scripts/install-deps installs it into .venv-crossbar "
                    "(or set BBK_CROSSBAR to a crossbar executable)")
    router = Router(binary, free_port())
    try:
        router.wait_ready()
    except RuntimeError:
        router.stop()
        raise
    yield router
    router.stop()
