"""buildbot-worker processes "on other hosts": each in its own network namespace, for tests and bench.

Each namespace gets a veth pair to the host with a /24 of the private test range 10.231.0.0/16 that
exists only on the interfaces made here (never a real network).  The master's worker port listens on the
host side of the first pair; a worker reaches it through its namespace's default route.  The worker
runs in the private mount namespace ``ip netns exec`` gives it, with the master's directory covered by
an empty tmpfs: it cannot read the master's files, so everything a build needs or produces goes over
Buildbot's own transfers (the upload step), as for a worker on another machine.

Needs root (``ip netns add``); :func:`netns_unavailable` says why not when it cannot work here.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

from buildbot_kernel import settings as settings_mod

from .harness import BIN, wait_for

SUBNET = "10.231"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {r.stderr.strip()}")
    return r


def netns_unavailable() -> str | None:
    """None when network namespaces can be made here, else the reason (for pytest.skip)."""
    if not Path("/usr/sbin/ip").exists() and not Path("/sbin/ip").exists() and not Path("/bin/ip").exists():
        return "iproute2's ip is not installed (scripts/install-deps installs it)"
    probe = f"bbk-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"'ip netns add' is not permitted here (needs root): {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def listener_settings(host: str) -> tuple[str, str]:
    """[server] lines that put the master's worker port on ``host``, and the address REST is then on.

    With ``worker_bind`` the web UI and image server stay on loopback; a settings schema without it
    moves every listener with ``bind``."""
    if "worker_bind" in settings_mod.SECTIONS["server"]:
        return f'worker_bind = "{host}"\n', "127.0.0.1"
    return f'bind = "{host}"\n', host


def worker_tables(passwords: dict[str, str]) -> str:
    """One [[worker]] per name, one build at a time each."""
    return "".join(f'[[worker]]\nname = "{n}"\npassword = "{p}"\nmax_builds = 1\n' for n, p in passwords.items())


def connected(master) -> set[str]:
    """Names of the workers connected to the master (REST)."""
    return {w["name"] for w in master.get("workers")["workers"] if w["connected_to"]}


class Namespace:
    """One network namespace joined to the host by a veth pair: host ``.1``, namespace ``.2``."""

    def __init__(self, index: int):
        # a /24 per namespace, chosen from the pid so two runs on one machine do not collide
        self.net = f"{SUBNET}.{(os.getpid() % 100) * 2 + index}"
        tag = f"{os.getpid() % 100000}{index}"
        self.name = f"bbk-ns{tag}"
        self.host_if, self.ns_if = f"bbkh{tag}", f"bbkn{tag}"
        self.host_addr, self.addr = f"{self.net}.1", f"{self.net}.2"
        self.made = False

    def create(self):
        _ip("netns", "add", self.name)
        self.made = True
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_addr}/24", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        for args in (("addr", "add", f"{self.addr}/24", "dev", self.ns_if), ("link", "set", self.ns_if, "up"),
                     ("link", "set", "lo", "up"), ("route", "add", "default", "via", self.host_addr)):
            _ip("-n", self.name, *args)

    def pids(self) -> list[int]:
        r = _ip("netns", "pids", self.name, check=False)
        return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []

    def kill_all(self):
        """SIGKILL everything in the namespace: the machine is gone, mid-whatever it was doing."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def destroy(self):
        if not self.made:
            return
        self.kill_all()
        wait_for(lambda: not self.pids(), 30, f"the processes in {self.name} to exit")
        _ip("link", "del", self.host_if, check=False)  # removes the peer as well
        _ip("netns", "del", self.name, check=False)
        self.made = False


class NamespaceWorker:
    """A buildbot-worker in ``ns`` with its own basedir, unable to see ``hidden`` (the master's dir)."""

    def __init__(self, base: Path, name: str, password: str, ns: Namespace, master_addr: str, master_port: int,
                 hidden: Path, env: dict | None = None):
        self.name, self.ns, self.hidden = name, ns, hidden
        self.dir = base / f"worker-{name}"
        self.env = {**os.environ, **(env or {})}
        subprocess.run([str(BIN / "buildbot-worker"), "create-worker", "-q", str(self.dir),
                        f"{master_addr}:{master_port}", name, password], check=True, timeout=120)
        self.proc: subprocess.Popen | None = None

    def start(self):
        """Run the worker in the foreground of a shell in the namespace (so its pid is the Popen's)."""
        script = (f"mount -t tmpfs -o size=64k,mode=0700 bbk-not-shared {shlex.quote(str(self.hidden))} && "
                  f"exec {shlex.quote(str(BIN / 'buildbot-worker'))} start --nodaemon {shlex.quote(str(self.dir))}")
        log = open(self.dir / "console.log", "ab")  # the child keeps its own copy
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns.name, "sh", "-c", script],
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        log.close()

    def kill(self):
        """SIGKILL the worker and whatever build it is running: the host died."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.ns.kill_all()
        if self.proc:
            self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
