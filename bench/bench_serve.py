"""Benchmark: download throughput of the embedded image server vs nginx on loopback (goal >= 0.8x).

Both serve the same generated tree (under .cache/bench-serve/): N images with a 10 MB vmlinuz each.
nginx (the Debian package's binary) runs as an unprivileged-prefix instance with the configuration
`buildbot-kernel snippets` generates, wrapped in a minimal http block (started as root, its workers run as
www-data: the repository's parent directories must let others enter). The client is one curl process
doing --parallel transfers (32 at a time by default), so the client is the same C code for both.
Each server is measured alone, twice, alternating, and the best run of each is reported.
Usage: python bench/bench_serve.py [--clients 32] [--fetches 256] [--size-mb 10] [--images 16]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from lane_ports import free_port  # noqa: E402

from buildbot_kernel.imagetree.index import TreeIndex  # noqa: E402
from buildbot_kernel.imagetree.modes import Modes  # noqa: E402
from buildbot_kernel.imagetree.snippets import standalone_nginx_conf  # noqa: E402
from buildbot_kernel.imagetree.testing import make_image  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


def build_tree(root: Path, images: int, size: int) -> list[str]:
    marker = root / ".state" / f"bench-{images}-{size}"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for i in range(images):
            make_image(root, "bench", i, sizes={"vmlinuz": size})
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
    TreeIndex(root, "http://127.0.0.1/").regenerate()
    return sorted(f"bench/{d.name}/vmlinuz" for d in (root / "bench").iterdir() if d.is_dir())


def start_nginx(root: Path, work: Path, port: int) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "nginx.conf"
    conf.write_text(standalone_nginx_conf(str(root), f"http://127.0.0.1:{port}/", str(work)))
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(work)], stderr=subprocess.PIPE)
    wait_port(port, proc, "nginx")
    return proc


def start_embedded(root: Path, work: Path, port: int) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "buildbot_kernel.imagetree.server", "--root", str(root), "--port", str(port),
         "--access-log", str(work / "access.log")],
        env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL)
    wait_port(port, proc, "embedded server")
    return proc


def fetch_all(port: int, paths: list[str], fetches: int, clients: int, size: int, procs: int) -> float:
    """Bytes per second for ``fetches`` downloads, ``clients`` at a time spread over ``procs`` curl
    processes; checks the status and size of every download."""
    urls = [f"http://127.0.0.1:{port}/{paths[i % len(paths)]}" for i in range(fetches)]
    cmds = []
    for k in range(procs):
        cmd = ["curl", "-s", "--no-progress-meter", "--parallel", "--parallel-max", str(max(1, clients // procs)),
               "-w", "%{http_code} %{size_download}\n"]
        for u in urls[k::procs]:
            cmd += ["-o", "/dev/null", u]
        cmds.append(cmd)
    t = time.perf_counter()
    running = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in cmds]
    out = "".join(p.communicate()[0] for p in running)
    elapsed = time.perf_counter() - t
    results = re.findall(r"^(\d+) (\d+)$", out, re.M)
    bad = [r for r in results if r != ("200", str(size))]
    if len(results) != fetches or bad:
        raise SystemExit(f"downloads failed: {len(results)} results, bad: {bad[:3]}")
    return fetches * size / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--fetches", type=int, default=256, help="downloads per measurement")
    ap.add_argument("--size-mb", type=int, default=10)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--client-procs", type=int, default=1,
                    help="curl processes sharing the clients (1: one event loop, as a farm's fetcher)")
    args = ap.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    if not os.path.exists(NGINX):
        raise SystemExit("nginx is not installed (scripts/install-deps installs it)")
    size = args.size_mb * 1_000_000
    cache = REPO / ".cache" / "bench-serve"
    root = cache / "tree"
    paths = build_tree(root, args.images, size)
    unreadable = Modes().unreadable(root)  # nginx's workers read as www-data when started as root
    if unreadable and os.geteuid() == 0:
        raise SystemExit("www-data cannot read the tree:\n" + "\n".join(unreadable[:5]))
    for p in paths:  # both servers read from the page cache
        (root / p).read_bytes()
    best = {"embedded": 0.0, "nginx": 0.0}
    starters = {"embedded": start_embedded, "nginx": start_nginx}
    for _ in range(args.rounds):
        for name, start in starters.items():
            port = free_port()
            proc = start(root, cache / name, port)
            try:
                fetch_all(port, paths, min(args.clients, args.fetches), args.clients, size, 1)  # warm up
                best[name] = max(best[name], fetch_all(port, paths, args.fetches, args.clients, size,
                                                       args.client_procs))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    ratio = best["embedded"] / best["nginx"]
    print(f"{args.fetches} downloads of {args.size_mb} MB, {args.clients} concurrent clients "
          f"({args.client_procs} curl --parallel process(es)), loopback, {os.cpu_count()} cpus")
    print(f"embedded server: {best['embedded'] / 1e6:8.0f} MB/s")
    print(f"nginx:           {best['nginx'] / 1e6:8.0f} MB/s")
    print(f"ratio embedded/nginx: {ratio:.2f}x  (goal >= 0.80x)")
    return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
