"""An image tree like the server publishes (docs/index-format.md), for commits of a generated history, and
a real HTTP server on loopback serving it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from buildbot_kernel.naming import image_name
from tests.bisect.history import EPOCH, History

BRANCH = "main"
BUILD = "x86_64"


def write_image_tree(root: Path, h: History, nodes: Iterable[int], base_url: str,
                     build: str = BUILD) -> Path:
    """One image directory per node (small fake files, real checksums) and ``root/index.json``."""
    entries = []
    for i in sorted(set(nodes), reverse=True):  # newest first, as the index is
        sha = h.shas[i]
        name = image_name("6.1.0", BRANCH, sha, EPOCH + 60 * i, at_release_tag=False)
        d = root / BRANCH / name
        d.mkdir(parents=True, exist_ok=True)
        files = {"vmlinuz": f"kernel image of {sha}\n".encode(), "config": b"CONFIG_X86_64=y\n"}
        for fname, data in files.items():
            (d / fname).write_bytes(data)
        meta = {
            "schema": 1, "name": name, "repository": "gen", "url": str(h.path), "branch": BRANCH, "sha": sha,
            "subject": f"c{i}", "author": "Gen <gen@example.com>", "commit_date": "2023-11-14T22:13:20Z",
            "build_date": "2023-11-15T00:00:00Z", "build": build, "arch": "x86_64", "kernelrelease": name,
            "files": {f: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for f, b in files.items()},
        }
        (d / "metadata.json").write_text(json.dumps(meta))
        entry = dict(meta, repository_url=meta["url"], url=f"{base_url.rstrip('/')}/{BRANCH}/{name}/",
                     path=f"{BRANCH}/{name}/")
        entries.append(entry)
    index = root / "index.json"
    index.write_text(json.dumps({"schema": 1, "generated": "2023-11-15T00:00:00Z", "images": entries}))
    return index


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serve_dir(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (a free port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
