"""Several masters: the settings that make one (and refuse a half-shared setup), the index writer's lock
across processes, and which masters the failover heartbeat declares dead (README "Growing past one
machine")."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

from buildbot.util import epoch2datetime
from test_settings import GOOD, problems

from buildbot_kernel import settings
from buildbot_kernel.imagetree.index import TreeIndex
from buildbot_kernel.imagetree.testing import make_image
from buildbot_kernel.imagetree.treelock import TreeLock, try_hold
from buildbot_kernel.master.cluster import silent_masters

PG = "postgresql+psycopg://buildbot@db.lab.example/buildbot"


def server(extra: str) -> str:
    return GOOD.replace("web_port = 8010", f"web_port = 8010\n{extra}")


def test_one_master_by_default_and_a_shared_setup_parses():
    one = settings.parse(GOOD)
    assert one.server.mq_router == "" and one.server.state_dir == "state"
    two = settings.parse(server(f'mq_router = "ws://10.0.0.5:8090/ws"\ndb_url = "{PG}"\n'
                                'state_dir = "/srv/bbk/state"\nmaster_timeout = 30'))
    assert (two.server.mq_router, two.server.state_dir, two.server.master_timeout) == (
        "ws://10.0.0.5:8090/ws", "/srv/bbk/state", 30)


def test_a_router_without_a_shared_database_or_state_names_each_field_and_the_fix():
    msg = problems(server('mq_router = "ws://10.0.0.5:8090/ws"'))
    assert "[server].db_url: several masters (mq_router is set) need one shared database" in msg
    assert "postgresql+psycopg://" in msg
    assert "[server].state_dir: several masters (mq_router is set) share the ledger" in msg
    assert "absolute path of a directory on the shared filesystem" in msg


def test_a_router_url_must_be_websocket():
    msg = problems(server(f'mq_router = "http://10.0.0.5:8090"\ndb_url = "{PG}"\nstate_dir = "/srv/s"'))
    assert "[server].mq_router: 'http://10.0.0.5:8090' is not a ws:// or wss:// URL" in msg
    assert "[server].db_url" not in msg and "[server].state_dir" not in msg


def test_master_timeout_has_a_floor():
    assert "[server].master_timeout" in problems(server("master_timeout = 5"))


def test_silent_masters_are_the_other_active_ones_past_the_timeout():
    now = 10_000.0
    m = [SimpleNamespace(id=1, active=True, last_active=epoch2datetime(now - 100)),   # me: never
         SimpleNamespace(id=2, active=True, last_active=epoch2datetime(now - 61)),    # silent
         SimpleNamespace(id=3, active=True, last_active=epoch2datetime(now - 59)),    # alive
         SimpleNamespace(id=4, active=False, last_active=epoch2datetime(now - 900)),  # already dead
         SimpleNamespace(id=5, active=True, last_active=None)]
    assert [x.id for x in silent_masters(m, me=1, now=now, timeout=60)] == [2]
    assert isinstance(m[1].last_active, datetime.datetime)


HOLDER = """
import sys, time
from buildbot_kernel.imagetree.treelock import TreeLock, try_hold
with TreeLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def holder(path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    assert p.stdout.readline().strip() == "held"
    return p


def acquire_in_thread(lock: TreeLock) -> threading.Event:
    got = threading.Event()

    def run():
        with lock:
            got.set()
    threading.Thread(target=run, daemon=True).start()
    return got


def test_the_index_lock_excludes_another_process_until_it_lets_go(tmp_path):
    path = tmp_path / ".state" / "index.lock"
    p = holder(path)
    got = acquire_in_thread(TreeLock(path))
    assert not got.wait(1.0)  # the other process (the other master) holds it
    p.stdin.write("\n")
    p.stdin.flush()
    assert got.wait(30)
    p.wait(30)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    path = tmp_path / "index.lock"
    p = holder(path)
    got = acquire_in_thread(TreeLock(path))
    assert not got.wait(1.0)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(30)
    assert got.wait(30)


def test_the_index_lock_is_reentrant_in_its_thread(tmp_path):
    lock = TreeLock(tmp_path / "l")
    with lock, lock:
        assert lock._fd is not None
    assert lock._fd is None


def test_an_index_another_master_rewrote_is_rewritten_even_when_this_one_saw_no_change(tmp_path):
    """Master a wrote the index; b published and wrote its own; the image b added is gone again (b's
    retention, an admin): a's view is back to what it wrote, but the file on disk is b's."""
    root = tmp_path / "images"
    a, b = TreeIndex(root, "http://x"), TreeIndex(root, "http://x")
    one = make_image(root, "main", 1)
    a.regenerate()

    def listed():
        return sorted(i["path"] for i in json.loads((root / "index.json").read_text())["images"])
    assert len(listed()) == 1
    two = make_image(root, "main", 2)
    b.regenerate()
    assert len(listed()) == 2
    shutil.rmtree(two)
    a.regenerate()
    assert listed() == [f"{one.parent.name}/{one.name}/"]


def test_one_farm_per_state_directory_the_second_master_is_told_no_until_the_first_is_gone(tmp_path):
    path = tmp_path / "state" / "farm.lock"
    p = holder(path)  # the master running the farm
    assert try_hold(path) is None
    p.stdin.write("\n")
    p.stdin.flush()
    p.wait(30)
    fd = try_hold(path)
    assert fd is not None
    os.close(fd)
