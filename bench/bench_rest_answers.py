"""Benchmark: REST answers of a real master cut short under load (goal: none).

Buildbot 4.2/4.3 wrote the web API's JSON from a pool thread; when the reactor flushed the same
connection at that moment the body was lost, and the client read the headers and then the end of the
connection.  buildbot_kernel.buildbot_adapter.write_rest_json_on_the_reactor moves the write back to
the reactor.  This bench starts a real master on the fixture kernel tree (no worker: nothing builds)
watching ``--branches`` branches, each with a builder and a force form; then ``--clients`` threads GET
a large answer (the force forms) and a small one (the builders) for ``--seconds``, while ``--hogs``
processes keep the cores busy, as builds and test machines do.  It prints how many answers came whole
and how many were cut short or reset.  With Buildbot 4.3's own write, 3 of 646 and 3 of 638 answers
were cut short here (100 branches, 60 s); with the write on the reactor, none of 3062 and 2480.
Usage: python bench/bench_rest_answers.py [--clients 8] [--seconds 60] [--hogs 2] [--branches 100]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from integration.harness import FixtureRepo, Master, free_port, settings_text  # noqa: E402

PATHS = ("forceschedulers", "builders")


def hog(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        sum(i * i for i in range(10_000))


def client(url: str, stop_at: float, counts: dict, lock: threading.Lock) -> None:
    n = 0
    while time.monotonic() < stop_at:
        path = PATHS[n % len(PATHS)]
        n += 1
        try:
            with urllib.request.urlopen(f"{url}/api/v2/{path}", timeout=30) as r:
                json.load(r)
            outcome = "whole"
        except http.client.IncompleteRead:
            outcome = "cut short"
        except ConnectionError:
            outcome = "reset"
        with lock:
            counts[outcome] = counts.get(outcome, 0) + 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--hogs", type=int, default=2)
    ap.add_argument("--branches", type=int, default=100, help="watched branches: each adds a builder and a force form")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bbk-bench-rest-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        branches = tuple(f"topic-{i}" for i in range(args.branches))
        repo = FixtureRepo(base, branches)
        ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
        master = Master(base, settings_text(str(repo.bare), branches, ports, poll=60))
        master.start(ports["web"])
        try:
            size = len(json.dumps(master.get("forceschedulers")))
            stop_at = time.monotonic() + args.seconds
            hogs = [multiprocessing.Process(target=hog, args=(stop_at,)) for _ in range(args.hogs)]
            counts: dict[str, int] = {}
            lock = threading.Lock()
            clients = [threading.Thread(target=client, args=(f"http://127.0.0.1:{ports['web']}", stop_at, counts, lock))
                       for _ in range(args.clients)]
            for p in (*hogs, *clients):
                p.start()
            for p in (*clients, *hogs):
                p.join()
        finally:
            master.stop()
    total = sum(counts.values())
    print(f"{total} REST answers in {args.seconds:.0f} s ({args.clients} clients, {args.hogs} CPU hogs; "
          f"the force forms are {size} bytes of JSON)")
    for outcome in ("whole", "cut short", "reset"):
        print(f"  {outcome}: {counts.get(outcome, 0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
