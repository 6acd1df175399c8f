"""A real Buildbot master and a real buildbot-worker process on loopback, for integration tests.

Nothing is faked: ``buildbot create-master``/``start``, ``buildbot-worker create-worker``/``start``,
the project's own master.cfg, a settings.toml written for the test, git repositories on disk, and the
REST API over HTTP.  Waiting is always "poll a condition until a deadline", never a fixed sleep.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lane_ports import free_port  # noqa: F401  (the tests import it from here)

from buildbot_kernel.resources import shipped

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKELINUX = REPO_ROOT / "tests" / "fixtures" / "fakelinux"
BIN = Path(sys.executable).parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Fixture Dev", "GIT_AUTHOR_EMAIL": "dev@example.org",
    "GIT_COMMITTER_NAME": "Fixture Dev", "GIT_COMMITTER_EMAIL": "dev@example.org",
}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our own child, not yet reaped) is gone for every purpose here
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def git(cwd, *args, env=None, check=True) -> str:
    e = {**os.environ, **GIT_ENV, **(env or {})}
    r = subprocess.run(["git", *args], cwd=cwd, env=e, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {r.stderr}")
    return r.stdout.strip()


class FixtureRepo:
    """An upstream bare repository plus a working clone that tests commit and push from."""

    def __init__(self, base: Path, branches=("drm-intel-fixes", "drm-intel-next"), tree: Path = FAKELINUX):
        self.bare = base / "upstream.git"
        self.work = base / "dev"
        git(base, "init", "-q", "--bare", str(self.bare))
        shutil.copytree(tree, self.work)
        git(self.work, "init", "-q", "-b", branches[0])
        git(self.work, "add", "-A")
        self._commit("Initial fixture kernel tree")
        git(self.work, "remote", "add", "origin", str(self.bare))
        for b in branches:
            if b != branches[0]:
                git(self.work, "branch", "-f", b)
            git(self.work, "push", "-q", "origin", b)
        self.date = 1767225600  # 2026-01-01T00:00:00Z; each commit one hour later

    def _commit(self, message: str):
        d = getattr(self, "date", 1767225600) + 3600
        self.date = d
        stamp = f"@{d} +0000"
        git(self.work, "commit", "-q", "-m", message, env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})
        return git(self.work, "rev-parse", "HEAD")

    def commit_file(self, branch: str, path: str, content: str, message: str) -> str:
        git(self.work, "checkout", "-q", branch)
        p = self.work / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
        git(self.work, "add", path)
        return self._commit(message)

    def plant_regression(self, branch: str, changes: int, culprit: int) -> list[str]:
        """``changes`` commits on ``branch`` (not pushed): change ``culprit`` puts "REGRESSION" into the
        kernel image, which the tests' check greps for.  Returns [the head before, change 1, ...]."""
        shas = [git(self.work, "rev-parse", branch)]
        for i in range(1, changes + 1):
            if i == culprit:
                path, text = "drivers/gpu/i915.c", ('/* fixture */\nconst char i915_state[] = "i915 REGRESSION";\n'
                                                    'int i915_init(void) { return 0; }\n')
            else:
                path, text = f"drivers/gpu/part{i}.c", f"int part{i}(void) {{ return {i}; }}\n"
            shas.append(self.commit_file(branch, path, text, f"drm/i915: change {i}"))
        return shas

    def push(self, branch: str, force=False):
        git(self.work, "push", "-q", *(["-f"] if force else []), "origin", branch)

    def head(self, branch: str) -> str:
        return git(self.bare, "rev-parse", branch)


def settings_text(repo_url: str, branches, ports: dict, extra: str = "", poll: int = 1, max_builds: int = 1,
                  db_url: str | None = None, server_extra: str = "", worker: bool = True) -> str:
    """settings.toml for a test master; ``db_url`` None keeps the default SQLite file in the master dir.

    ``server_extra`` adds [server] keys; ``worker=False`` leaves out the default ``w1`` worker (the test
    then declares its own in ``extra``)."""
    db = f"db_url = {json.dumps(db_url)}\n" if db_url else ""
    workers = f"""[[worker]]
name = "w1"
password = "pw"
max_builds = {max_builds}
""" if worker else ""
    return f"""
[server]
title = "test"
{db}{server_extra}web_port = {ports['web']}
worker_port = {ports['worker']}
image_port = {ports['image']}
[images]
root = "images"
base_url = "http://127.0.0.1:{ports['image']}"
[[repository]]
name = "drm-intel"
url = "{repo_url}"
branches = {json.dumps(list(branches))}
poll_interval = {poll}
build = "x86_64"
[[build]]
name = "x86_64"
arch = "x86_64"
config = "defconfig"
{workers}{extra}
"""


class Master:
    def __init__(self, base: Path, settings: str, workers=("w1",), upgrade: bool = False,
                 api_host: str = "127.0.0.1"):
        """``upgrade``: run ``buildbot upgrade-master`` once settings.toml is written, as a new database
        that is not the default SQLite file (PostgreSQL) needs before the first start."""
        self.base = base
        self.dir = base / "master"
        self.ports = {}
        self.workers = workers
        self.api_host = api_host
        if not self.dir.exists():
            self._run(BIN / "buildbot", "create-master", "-q", str(self.dir))
            shutil.copy(shipped("master.cfg"), self.dir / "master.cfg")
        (self.dir / "settings.toml").write_text(settings)
        if upgrade:
            self._run(BIN / "buildbot", "upgrade-master", str(self.dir))

    @property
    def env(self):
        return {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def _run(self, *cmd, check=True):
        r = subprocess.run([str(c) for c in cmd], env=self.env, capture_output=True, text=True, timeout=300)
        if check and r.returncode != 0:
            log = self.dir / "twistd.log"
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise AssertionError(f"{cmd} failed ({r.returncode}): {r.stdout}\n{r.stderr}\n{tail}")
        return r

    def start(self, web_port: int, timeout: float = 120):
        """``buildbot start``, waiting for the web API as long as a loaded machine needs: the start-up
        (many builders, database recovery after a crash) can take longer than the 10 s that ``buildbot
        start`` itself watches before it gives up watching (the master goes on starting)."""
        self.web_port = web_port
        r = self._run(BIN / "buildbot", "start", str(self.dir), check=False)
        if r.returncode != 0 and "took more than" not in r.stdout + r.stderr:
            raise AssertionError(f"buildbot start failed ({r.returncode}): {r.stdout}{r.stderr}\n{self.log_tail()}")
        wait_for(self._api_ok, timeout, f"the web API on port {web_port} to answer as {self.dir}'s")

    def stop(self, timeout: float = 180):
        """``buildbot stop``, then wait until the process is gone: ``buildbot stop`` gives up watching
        after 10 s, and a master finishing its shutdown on a loaded machine (database writes, a build
        being retried) can take longer; a test that went on would read half-written state or fail to
        start the master again ("already running")."""
        pid = self._pid()
        self._run(BIN / "buildbot", "stop", str(self.dir), check=False)
        if pid is not None:
            wait_for(lambda: not _alive(pid), timeout, f"master {self.dir} (pid {pid}) to exit")

    def _pid(self) -> int | None:
        try:
            return int((self.dir / "twistd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _api_ok(self):
        """The web API answers, and it is this master's: a master that could not listen on its web port
        runs on without one (Buildbot logs it), and whatever holds the port would answer instead."""
        try:
            masters = self.get("masters")["masters"]
        except (OSError, http.client.HTTPException):  # not listening yet, or cut off while starting
            return False
        return any(m["name"].endswith(":" + str(self.dir.resolve())) for m in masters)

    def get(self, path: str):
        with urllib.request.urlopen(f"http://{self.api_host}:{self.web_port}/api/v2/{path}", timeout=10) as r:
            return json.load(r)

    def post_json(self, path: str, payload: dict):
        req = urllib.request.Request(f"http://{self.api_host}:{self.web_port}/api/v2/{path}",
                                     data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def builds(self, builder: str | None = None) -> list[dict]:
        # explicit order: without one, PostgreSQL hands rows back in no particular order (an updated row
        # may come last), and tests index these lists
        builds = self.get("builds?property=*&order=buildid")["builds"]
        if builder is None:
            return builds
        bid = self.builder_id(builder)
        return [b for b in builds if b["builderid"] == bid]

    def asked_for(self) -> int:
        """Buildsets someone asked for over REST (a force, a rebuild): what a refusal test counts.  The
        change poller's and the heads check's own build requests come whenever their timers fire, late
        on a loaded machine, so counting every buildset failed refusal tests now and then."""
        return sum(b["reason"] == "rebuild" or (b["reason"] or "").startswith("A build was forced by")
                   for b in self.get("buildsets")["buildsets"])

    def builder_id(self, name: str) -> int:
        for b in self.get("builders")["builders"]:
            if b["name"] == name:
                return b["builderid"]
        raise KeyError(name)

    def steps(self, buildid: int) -> list[dict]:
        return self.get(f"builds/{buildid}/steps")["steps"]

    def log_texts(self, buildid: int) -> dict[str, str]:
        """"<step> <log>" -> the log's text, for every log of the build, as the web UI reads them."""
        texts = {}
        for step in self.steps(buildid):
            for log in self.get(f"steps/{step['stepid']}/logs")["logs"]:
                chunks = self.get(f"logs/{log['logid']}/contents")["logchunks"]
                texts[f"{step['name']} {log['name']}"] = "".join(c["content"] for c in chunks)
        return texts

    def idle(self) -> bool:
        """No build running and nothing queued."""
        pending = self.get("buildrequests?complete=false")["buildrequests"]
        running = [b for b in self.get("builds?complete=false")["builds"]]
        return not pending and not running

    def force(self, scheduler: str, properties: dict) -> int:
        """Force ``scheduler`` over REST with ``properties``; the buildset id."""
        answer = self.post_json(f"forceschedulers/{scheduler}",
                                {"jsonrpc": "2.0", "method": "force", "id": 1, "params": properties})
        assert "error" not in answer, answer
        return answer["result"][0]

    def log_tail(self, n=3000) -> str:
        return (self.dir / "twistd.log").read_text()[-n:]


def bisect_build(master: Master, bsid: int, timeout: float = 150) -> dict:
    """The (last) build of the buildset once it is complete and the request is done."""
    def done():
        reqs = master.get(f"buildrequests?buildsetid={bsid}")["buildrequests"]
        if not reqs or not reqs[0]["complete"]:
            return None
        builds = master.get(f"builds?buildrequestid={reqs[0]['buildrequestid']}&property=*&order=buildid")["builds"]
        return builds[-1] if builds and builds[-1]["complete"] else None
    return wait_for(done, timeout, f"bisect buildset {bsid} to finish")


# in every test worker's environment, as a lab's proxy password would be: no log may show it
WORKER_SECRET_ENV = {"BBK_TEST_WORKER_SECRET": "worker-env-secret-7d1c"}


class Worker:
    def __init__(self, base: Path, name: str, password: str, master_port: int):
        self.dir = base / f"worker-{name}"
        if not self.dir.exists():
            subprocess.run([str(BIN / "buildbot-worker"), "create-worker", "-q", str(self.dir),
                            f"127.0.0.1:{master_port}", name, password], check=True)

    def start(self):
        subprocess.run([str(BIN / "buildbot-worker"), "start", str(self.dir)], check=True,
                       capture_output=True, timeout=120, env={**os.environ, **WORKER_SECRET_ENV})

    def stop(self):
        subprocess.run([str(BIN / "buildbot-worker"), "stop", str(self.dir)], capture_output=True, timeout=120)


def object_dirs(*roots: Path) -> dict[Path, int]:
    """Every git ``objects/`` directory under ``roots`` with its ``du -sb`` size (bytes, apparent)."""
    found = {}
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root):
            if "objects" in dirnames and (Path(dirpath) / "HEAD").is_file():
                found[Path(dirpath) / "objects"] = None
            if Path(dirpath).name == "objects":
                dirnames[:] = []
    if not found:
        return {}
    out = subprocess.run(["du", "-sb", *map(str, found)], capture_output=True, text=True, check=True).stdout
    return {Path(line.split("\t", 1)[1]): int(line.split("\t", 1)[0]) for line in out.splitlines()}

