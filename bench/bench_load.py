"""Load held: image downloads and machine polls while branch builds publish and the index regenerates.

Starts a real master and worker (as the integration tests do) on the fixture kernel tree, with 50
``[[machine]]`` tables (remote machines, power commands that do nothing: nothing boots here).  Then, for a
bounded time and count, all on 127.0.0.1:

* ``--downloads`` concurrent clients (200) fetch files of the published images from the image server
  (the embedded one, inside the master), each one request after the other;
* ``--machines`` simulated test machines (50) poll ``GET /machines/<name>/boot`` every second, as stage 1
  does, each with ``X-BBK-Key: <key>`` from its ``[[machine]]`` key file.  An answer 403 is counted as
  "refused" (and the run fails): the master refused a machine its own key;
* a pusher commits to both branches every few seconds (each push: a build, a publish, the index
  regenerated), and hand-made images dropped into the tree make the watcher regenerate it too;
* the web UI's REST API is sampled (``/api/v2/builds?limit=20&order=-buildid``, what the UI's home page
  asks) every 200 ms; a trivial endpoint (``/api``, the API versions, answered without the database) every 50 ms: its
  worst latency is the reactor's worst stall as seen from outside (an upper bound: it includes queueing).

The image server allows 64 open connections per client address (README, "Images"): 250 clients on one
address would mostly be refused with 503, which says nothing about load.  So the clients connect to
127.0.0.1 from source addresses 127.0.0.1 to 127.0.0.<N> (all loopback; ``--sources``, default 5, at most
52 connections each); ``--sources 1`` shows the limit at work instead.  The client is asyncio in one
process, one connection per request.  The machine has few cores: the client
competes with the master for them, so figures are a floor, not a ceiling.

    .venv/bin/python bench/bench_load.py [--seconds 30] [--downloads 200] [--machines 50] [--sources 5]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from integration.harness import BIN, FixtureRepo, Master, Worker, free_port, settings_text, wait_for  # noqa: E402

from buildbot_kernel.imagetree.testing import make_image  # noqa: E402

BRANCHES = ("drm-intel-fixes", "drm-intel-next")
MAX_DOWNLOADS = 200_000  # the count bound, whatever --seconds says


@dataclass
class Series:
    latencies: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    bytes: int = 0

    def add(self, code: int, seconds: float, size: int = 0):
        self.codes[code] = self.codes.get(code, 0) + 1
        self.latencies.append(seconds)
        self.bytes += size

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] * 1000

    def line(self, name: str, seconds: float, refused_ok=False) -> str:
        ok = self.codes.get(200, 0) + self.codes.get(206, 0)
        refused = self.codes.get(403, 0) if refused_ok else 0
        bad = sum(self.codes.values()) - ok - refused + len(self.errors)
        extra = f", refused (403) {refused}" if refused_ok else ""
        other = {c: n for c, n in sorted(self.codes.items()) if c not in (200, 206) and not (refused_ok and c == 403)}
        extra += f" (status {other})" if other else ""
        rate = f"{len(self.latencies) / seconds:7.1f} req/s"
        mb = f", {self.bytes / seconds / 1e6:.1f} MB/s" if self.bytes else ""
        return (f"  {name:<28} {len(self.latencies):6d} requests, {rate}{mb}; p50 {self.pct(50):6.1f} ms, "
                f"p99 {self.pct(99):6.1f} ms, max {self.pct(100):6.1f} ms; errors {bad}{extra}")


async def http_get(port: int, path: str, headers: dict[str, str] | None = None, source: str = "127.0.0.1"
                   ) -> tuple[int, int]:
    """One GET to 127.0.0.1 from the loopback address ``source``, with its own connection; (status, body
    bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{head}\r\n".encode())
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        size = 0
        while chunk := await reader.read(1 << 16):
            size += len(chunk)
        return status, size
    finally:
        writer.close()


async def timed(series: Series, port: int, path: str, headers=None, source: str = "127.0.0.1"):
    t = time.monotonic()
    try:
        code, size = await asyncio.wait_for(http_get(port, path, headers, source), 30)
    except (TimeoutError, OSError, ValueError, IndexError) as e:
        series.errors.append(f"{path}: {e!r}")
        series.latencies.append(time.monotonic() - t)
        return
    series.add(code, time.monotonic() - t, size)


async def downloader(series: Series, port: int, files: list[str], until: float, budget: list[int], source: str):
    while time.monotonic() < until and budget[0] > 0:
        budget[0] -= 1
        await timed(series, port, random.choice(files), source=source)


async def machine(series: Series, port: int, name: str, key: str | None, until: float, source: str):
    headers = {"X-BBK-Key": key} if key else None
    await asyncio.sleep(random.random())  # machines do not all boot in the same millisecond
    while time.monotonic() < until:
        t = time.monotonic()
        await timed(series, port, f"/machines/{name}/boot", headers, source)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t)))


async def sampler(series: Series, port: int, path: str, every: float, until: float):
    while time.monotonic() < until:
        t = time.monotonic()
        await timed(series, port, path)
        await asyncio.sleep(max(0.0, every - (time.monotonic() - t)))


def pusher(repo: FixtureRepo, every: float, stop: threading.Event, pushed: list[str]):
    i = 0
    while not stop.wait(every):
        branch = BRANCHES[i % 2]
        repo.commit_file(branch, f"drivers/gpu/load{i}.c", f"int load{i}(void) {{ return {i}; }}\n",
                         f"drm/i915: load change {i}")
        repo.push(branch)
        pushed.append(repo.head(branch))
        i += 1


def dropper(root: Path, every: float, stop: threading.Event, dropped: list[str]):
    """Images added by hand, as people do on the NFS tree: the watcher regenerates the index."""
    i = 0
    while not stop.wait(every):
        dropped.append(make_image(root, "by-hand", 1000 + i, sizes={"vmlinuz": 1 << 20}).name)
        i += 1


def index_watch(root: Path, stop: threading.Event, seen: set):
    while not stop.wait(0.1):
        try:
            seen.add(json.loads((root / "index.json").read_text())["generated"])
        except (OSError, ValueError, KeyError):
            pass


def machine_tables(n: int, key_dir: Path) -> tuple[str, dict[str, str]]:
    """``[[machine]]`` tables of ``n`` remote machines, each with its key file in ``key_dir`` (a remote
    machine must have one), and name -> key."""
    key_dir.mkdir(parents=True, exist_ok=True)
    keys, tables = {}, []
    for i in range(1, n + 1):
        name, path = f"m{i}", key_dir / f"m{i}.key"
        keys[name] = secrets.token_hex(16)
        path.write_text(keys[name] + "\n")
        path.chmod(0o600)
        tables.append(f'[[machine]]\nname = "{name}"\ntype = "remote"\npower_cycle = "true"\npoll = 1\n'
                      f'key_file = "{path}"\n')
    return "".join(tables), keys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30, help="length of the load phase (default 30)")
    ap.add_argument("--downloads", type=int, default=200, help="concurrent download clients (default 200)")
    ap.add_argument("--machines", type=int, default=50, help="simulated machines polling (default 50)")
    ap.add_argument("--push-every", type=float, default=4, help="seconds between pushes (default 4)")
    ap.add_argument("--sources", type=int, default=5, help="client source addresses 127.0.0.1..127.0.0.N "
                    "(default 5; 1 = everything from 127.0.0.1)")
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one, removed)")
    args = ap.parse_args()
    if (not 0 < args.seconds <= 600 or not 0 < args.downloads <= 1000 or not 0 <= args.machines <= 500
            or not 1 <= args.sources <= 250):
        ap.error("bounded: --seconds in (0, 600], --downloads in (0, 1000], --machines in [0, 500], "
                 "--sources in [1, 250]")
    base = Path(args.keep or tempfile.mkdtemp(prefix="bench-load-"))
    base.mkdir(parents=True, exist_ok=True)
    repo = FixtureRepo(base, BRANCHES)
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    tables, keys = machine_tables(args.machines, base / "keys")
    text = settings_text(str(repo.bare), BRANCHES, ports, extra=tables, max_builds=2)
    master = Master(base, text)
    worker = Worker(base, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    try:
        return run_load(args, base, repo, master, worker, ports, keys)
    finally:
        worker.stop()
        master.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def answers(predicate):
    """``predicate()``, or False when the master's answer broke off (it is busy finishing the builds)."""
    try:
        return predicate()
    except (OSError, http.client.HTTPException):
        return False


def connected(master, name: str) -> bool:
    return any(w["name"] == name and w["connected_to"] for w in master.get("workers")["workers"])


def run_load(args, base, repo, master, worker, ports, keys) -> int:
    root = master.dir / "images"
    # a master with many machines (a local bisect worker each) opens its worker port a while after its web
    # port, and `buildbot-worker start` gives up waiting for the connection early: wait here instead
    subprocess.run([str(BIN / "buildbot-worker"), "start", str(worker.dir)], capture_output=True, timeout=120)
    wait_for(lambda: connected(master, "w1"), 120, "the worker to connect")
    stop = threading.Event()
    pushed, dropped, generated = [], [], set()
    try:
        wait_for(lambda: all((root / b).is_dir() for b in BRANCHES) and master.idle(), 180, "the first images")
        for i in range(8):  # something worth downloading: 1 MB kernels beside the fixture's tiny ones
            make_image(root, "preloaded", i, sizes={"vmlinuz": 1 << 20, "modules.tar.xz": 256 << 10})
        wait_for(lambda: len(json.loads((root / "index.json").read_text())["images"]) >= 10, 60, "the index")
        index = json.loads((root / "index.json").read_text())["images"]
        files = [e["url"].split(str(ports["image"]), 1)[1] + n for e in index for n in e["files"]]
        images_before = len(index)
        threads = [threading.Thread(target=pusher, args=(repo, args.push_every, stop, pushed), daemon=True),
                   threading.Thread(target=dropper, args=(root, args.push_every, stop, dropped), daemon=True),
                   threading.Thread(target=index_watch, args=(root, stop, generated), daemon=True)]
        for t in threads:
            t.start()
        dl, polls, rest, trivial = Series(), Series(), Series(), Series()

        async def load():
            until = time.monotonic() + args.seconds
            budget = [MAX_DOWNLOADS]
            sources = [f"127.0.0.{i % args.sources + 1}" for i in range(args.downloads + len(keys))]
            await asyncio.gather(
                *(downloader(dl, ports["image"], files, until, budget, sources[i]) for i in range(args.downloads)),
                *(machine(polls, ports["image"], n, k, until, sources[args.downloads + i])
                  for i, (n, k) in enumerate(keys.items())),
                sampler(rest, ports["web"], "/api/v2/builds?limit=20&order=-buildid", 0.2, until),
                sampler(trivial, ports["web"], "/api", 0.05, until))

        load_before = os.getloadavg()[0]
        t0 = time.monotonic()
        asyncio.run(load())
        elapsed = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(60)
        wait_for(lambda: answers(master.idle), 180, "the builds pushed during the load to finish")
        published = {json.loads(m.read_text())["sha"] for b in BRANCHES for m in (root / b).glob("*/metadata.json")}
        images_after = len(json.loads((root / "index.json").read_text())["images"])
    finally:
        stop.set()
    built_during = sum(1 for s in pushed if s in published)
    print(f"load for {elapsed:.1f} s on 127.0.0.1 ({args.downloads} download clients, {len(keys)} machines "
          f"polling every 1 s with their keys); {os.cpu_count()} cpus, load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(dl.line("image downloads", elapsed))
    print(polls.line("machine polls /boot", elapsed, refused_ok=True))
    met = "met" if rest.pct(99) < 500 else "NOT met"
    print(rest.line("web UI REST (builds)", elapsed) + f"   (goal p99 < 500 ms: {met})")
    print(trivial.line("trivial REST (/api)", elapsed))
    print(f"  reactor worst stall (upper bound, trivial request every 50 ms): {trivial.pct(100):.0f} ms")
    print(f"  during the load: {len(pushed)} pushes, {built_during} of them built and published; "
          f"{len(dropped)} images added by hand; index regenerated {len(generated)} times "
          f"({images_before} -> {images_after} images)")
    errs = dl.errors + polls.errors + rest.errors + trivial.errors
    for e in errs[:5]:
        print(f"  error: {e}")
    print(f"command: .venv/bin/python bench/{Path(__file__).name} --seconds {args.seconds:g} "
          f"--downloads {args.downloads} --machines {args.machines} --sources {args.sources}"
          )
    failed = len(errs) + sum(n for s in (dl, rest, trivial) for c, n in s.codes.items() if c not in (200, 206))
    failed += sum(n for c, n in polls.codes.items() if c != 200)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
