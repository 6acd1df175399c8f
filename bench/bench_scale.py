"""The same batch of fixture-tree builds on one worker, then on two, each worker in its own network namespace.

A real master (SQLite) and buildbot-worker processes in network namespaces (tests/integration/netns.py:
own addresses, the master's directory not visible), the fixture kernel tree with a generated C file that
takes seconds of single-threaded compiler time, so each build is CPU-bound on one core: ``jobs = 1`` per
build and ``max_builds = 1`` per worker, ccache off.  The batch: ROUNDS rounds of one new commit on each of
BRANCHES branches, each round pushed at once and waited for until every head is published (8 builds by
default).  Prints the wall time of the batch on one and on two workers and their ratio (goal >= 1.7x on a
machine with two idle cores).  Needs root (``ip netns add``).

    sudo .venv/bin/python bench/bench_scale.py [--branches 4] [--rounds 2] [--functions 2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from integration.harness import FixtureRepo, Master, free_port, settings_text, wait_for  # noqa: E402
from integration.netns import (  # noqa: E402
    Namespace,
    NamespaceWorker,
    connected,
    listener_settings,
    netns_unavailable,
    worker_tables,
)


def heavy_source(functions: int, salt: str) -> str:
    """C code that keeps gcc -O1 busy (a switch in a loop per function); the salt makes every commit's
    file new, so nothing is reused from an earlier build."""
    lines = [f"/* generated CPU work for bench_scale: {salt} */"]
    for i in range(functions):
        lines.append(
            f"unsigned heavy_{salt}_{i}(unsigned x) {{ unsigned s = {i}u; for (unsigned k = 0; k < x; k++) {{ "
            f"s = s * 31u + (k ^ {i}u); switch (s % 7u) {{ case 0: s += 3u; break; case 1: s ^= x; break; "
            f"case 2: s -= k; break; case 3: s *= 5u; break; default: s += {i}u; }} }} return s; }}")
    return "\n".join(lines) + "\n"


def published_shas(master, branches) -> set[str]:
    shas = set()
    for b in branches:
        d = master.dir / "images" / b
        if d.is_dir():
            shas |= {json.loads(m.read_text())["sha"] for m in d.glob("*/metadata.json")}
    return shas


def idle(master, hiccups: list) -> bool:
    """master.idle(), counting a truncated REST answer as "not yet" (seen twice under a load average of
    10+ on two cores: the master closed the connection after the headers); the count is printed."""
    try:
        return master.idle()
    except (http.client.IncompleteRead, ConnectionError) as e:
        hiccups.append(repr(e))
        return False


def run_batch(base: Path, nworkers: int, branches: list[str], rounds: int, functions: int, hiccups: list) -> float:
    """Wall seconds from the first push to the last image published, with ``nworkers`` workers."""
    base.mkdir(parents=True)
    base.chmod(0o755)
    repo = FixtureRepo(base, branches)
    namespaces = [Namespace(i + 1) for i in range(nworkers)]
    workers, master = [], None
    try:
        for ns in namespaces:
            ns.create()
        host = namespaces[0].host_addr
        ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
        passwords = {f"w{i + 1}": secrets.token_hex(16) for i in range(nworkers)}
        server, api_host = listener_settings(host)
        text = settings_text(str(repo.bare), branches, ports, extra=worker_tables(passwords), worker=False,
                             server_extra=server)
        text = text.replace('config = "defconfig"\n', 'config = "defconfig"\njobs = 1\nccache = false\n')
        master = Master(base, text, workers=tuple(passwords), api_host=api_host)
        master.start(ports["web"])
        for (name, password), ns in zip(passwords.items(), namespaces, strict=True):
            w = NamespaceWorker(base, name, password, ns, host, ports["worker"], hidden=master.dir,
                                env={"CCACHE_DISABLE": "1"})
            workers.append(w)
            w.start()
        names = set(passwords)
        wait_for(lambda: connected(master) >= names, 60, "the workers to connect")
        first = {repo.head(b) for b in branches}
        wait_for(lambda: published_shas(master, branches) >= first and idle(master, hiccups), 300, "the first heads")
        elapsed = 0.0
        for r in range(rounds):
            heads = set()
            for b in branches:
                salt = f"r{r}_{b.replace('-', '_')}"
                heads.add(repo.commit_file(b, f"drivers/gpu/heavy_{b}.c", heavy_source(functions, salt),
                                           f"bench: round {r} on {b}"))
            t0 = time.monotonic()
            for b in branches:
                repo.push(b)
            # a slow poll: the REST queries cost the master CPU that the builds share
            wait_for(lambda heads=heads: published_shas(master, branches) >= heads and idle(master, hiccups), 3600,
                     f"round {r} to be published", interval=1.0)
            elapsed += time.monotonic() - t0
        return elapsed
    finally:
        for w in workers:
            w.stop()
        if master is not None:
            master.stop()
        for ns in namespaces:
            ns.destroy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--branches", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="commits per branch (default 2)")
    ap.add_argument("--functions", type=int, default=2000, help="size of the generated C file per commit")
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one, removed)")
    args = ap.parse_args()
    reason = netns_unavailable()
    if reason:
        print(f"bench_scale: {reason}", file=sys.stderr)
        return 2
    branches = [f"drm-intel-b{i}" for i in range(args.branches)]
    top = Path(args.keep or tempfile.mkdtemp(prefix="bench-scale-"))
    top.mkdir(parents=True, exist_ok=True)
    top.chmod(0o755)
    load_before = os.getloadavg()[0]
    try:
        hiccups: list[str] = []
        one = run_batch(top / "one", 1, branches, args.rounds, args.functions, hiccups)
        two = run_batch(top / "two", 2, branches, args.rounds, args.functions, hiccups)
    finally:
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)
    builds = args.branches * args.rounds
    print(f"{builds} fixture builds ({args.branches} branches x {args.rounds} commits, {args.functions} "
          f"generated functions each, jobs=1, max_builds=1 per worker); cpus here: {os.cpu_count()}, "
          f"load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} (other load skews the ratio)")
    print(f"one worker:  {one:7.1f} s")
    print(f"two workers: {two:7.1f} s")
    print(f"ratio:       {one / two:7.2f}x  (goal >= 1.7x)")
    if hiccups:
        print(f"REST answers cut short and retried: {len(hiccups)} ({hiccups[0]})")
    print("reproduce:   " + shlex.join([sys.executable, "bench/bench_scale.py", "--branches", str(args.branches),
                                        "--rounds", str(args.rounds), "--functions", str(args.functions)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
