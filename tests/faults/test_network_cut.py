"""Fault 4: the network between a worker and the master cut in the middle of a compile, then restored.

The worker runs in its own network namespace (tests/integration/netns.py) and reaches the master over a
veth pair; the test sets the host's end of the pair down while the build is held in its compile step (the
gate of tests/integration/test_remote_workers.py), waits until the worker's kernel has given up the
connection (the namespace gives up unacknowledged data after a few retransmissions, and the worker sends a
keepalive every 2 s, so this takes seconds, not the default quarter of an hour), and sets the link up
again.  The worker reconnects; the build is retried and published exactly once, and the tree never lists
anything half-written.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest
from integration.harness import FixtureRepo, Master, free_port, settings_text, wait_for
from integration.netns import Namespace, NamespaceWorker, connected, listener_settings, netns_unavailable, worker_tables
from integration.test_remote_workers import gated_commit, kernel_builds, published, release

from buildbot_kernel.imagetree import package

from .tools import TreeWatch, image_dirs

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.netns]
BRANCH = "drm-intel-fixes"
SUCCESS, RETRY = 0, 5


def _ns(ns: Namespace, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns.name, *cmd], capture_output=True, text=True, timeout=30,
                          check=True).stdout


def _link(ns: Namespace, state: str) -> None:
    subprocess.run(["ip", "link", "set", ns.host_if, state], check=True, capture_output=True, timeout=30)


def test_network_cut_mid_build_is_retried_after_it_returns_and_published_once(tmp_path):
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    tmp_path.chmod(0o755)
    repo = FixtureRepo(tmp_path, (BRANCH,))
    ns = Namespace(3)
    master = worker = None
    try:
        ns.create()
        _ns(ns, "sysctl", "-qw", "net.ipv4.tcp_retries2=3")  # give up unacknowledged data after ~3 s
        ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
        password = secrets.token_hex(16)
        server, api_host = listener_settings(ns.host_addr)
        master = Master(tmp_path, settings_text(str(repo.bare), (BRANCH,), ports, worker=False, server_extra=server,
                                                extra=worker_tables({"w1": password})), api_host=api_host)
        master.start(ports["web"])
        worker = NamespaceWorker(tmp_path, "w1", password, ns, ns.host_addr, ports["worker"], hidden=master.dir,
                                 env={"CCACHE_DISABLE": "1"})
        tac = worker.dir / "buildbot.tac"
        tac.write_text(tac.read_text().replace("keepalive = 600", "keepalive = 2"))
        worker.start()
        wait_for(lambda: "w1" in connected(master), 90, "the worker to connect")
        root = master.dir / "images"
        wait_for(lambda: published(master, BRANCH) and master.idle(), 120, "the first head build")
        before = set(published(master, BRANCH))
        fifo, taken = tmp_path / "cut.fifo", tmp_path / "cut.taken"
        subprocess.run(["mkfifo", str(fifo)], check=True)
        sha = gated_commit(repo, BRANCH, f"if mkdir {taken} 2>/dev/null; then cat {fifo} > /dev/null; fi\n", "cut")
        with TreeWatch(root) as watch:
            repo.push(BRANCH)
            wait_for(taken.exists, 120, "the build to reach its compile step's gate")
            [running] = [b for b in kernel_builds(master) if not b["complete"]]
            _link(ns, "down")
            port = f"{ns.host_addr}:{ports['worker']}"
            wait_for(lambda: port not in _ns(ns, "ss", "-tnH", "state", "established"), 60,
                     "the worker to give up its connection")
            _link(ns, "up")
            release(fifo)  # whatever the old build still runs may end

            def done():
                reqs = master.get(f"buildrequests?buildrequestid={running['buildrequestid']}")["buildrequests"]
                return reqs and reqs[0]["complete"] and master.idle()
            wait_for(done, 180, "the build request to finish after the link returned")
        runs = master.get(f"builds?buildrequestid={running['buildrequestid']}&property=*&order=buildid")["builds"]
        assert [b["results"] for b in runs] == [RETRY, SUCCESS], [b["state_string"] for b in runs]
        assert runs[1]["properties"]["got_revision"][0] == sha
        new = {n: m for n, m in published(master, BRANCH).items() if n not in before}
        assert [m["sha"] for m in new.values()] == [sha]  # published exactly once
        [image] = [d for d in image_dirs(root) if d.name in new]
        assert package.verify_image_dir(image) == []
        index = [e["name"] for e in json.loads((root / "index.json").read_text())["images"]]
        assert index.count(image.name) == 1
        assert not list((root / ".incoming").iterdir())
        assert watch.problems == [] and watch.polls > 50, watch.problems[:5]
    finally:
        if worker is not None:
            worker.stop()
        if master is not None:
            master.stop()
        ns.destroy()
    print(f"fault 4 (network cut mid-build): {time.monotonic() - t0:.0f}s")
