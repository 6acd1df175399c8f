"""Fixture images for tests and benchmarks: real directories with the contract's files and manifest.

The payload is filler bytes (honestly not a kernel); everything else (names, metadata, hashes, the
publish path) is the real thing, so the index, retention, watchdog and server see what a build makes.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from buildbot_kernel.imagetree.package import REQUIRED_FILES, publish, staging_dir, write_manifest
from buildbot_kernel.naming import image_name
from buildbot_kernel.utctime import iso_utc

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def fake_sha(seed: str | int) -> str:
    return hashlib.sha1(str(seed).encode()).hexdigest()


def image_fields(branch: str, i: int, *, sha: str | None = None, build: str = "x86_64",
                 kernel: str = "6.1.0") -> dict:
    """Metadata fields of the i-th image of a branch; a higher ``i`` is newer (commit and build)."""
    sha = sha or fake_sha(f"{branch}-{i}")
    committed = EPOCH + timedelta(hours=i)
    name = image_name(kernel, branch, sha, committed.timestamp(), at_release_tag=False)
    return {
        "name": name, "kernelrelease": name, "repository": "fixture",
        "url": "https://git.example.org/fixture.git", "branch": branch, "sha": sha,
        "subject": f"commit {i} on {branch}", "author": "A U Thor <author@example.org>",
        "commit_date": iso_utc(committed), "build_date": iso_utc(committed + timedelta(minutes=30)),
        "build": build, "arch": "x86_64", "compiler": "gcc (fixture)", "build_seconds": 42,
    }


def write_payload(d: Path, sizes: dict[str, int] | None = None, seed: str = "") -> None:
    """The contract's files filled with deterministic bytes (``sizes`` overrides per file)."""
    sizes = sizes or {}
    for n in REQUIRED_FILES:
        size = sizes.get(n, 64)
        block = hashlib.sha256(f"{seed}/{n}".encode()).digest() * 2048  # 64 KiB
        with open(d / n, "wb") as f:
            left = size
            while left > 0:
                f.write(block[:left])
                left -= len(block)


def make_image(root: str | os.PathLike, branch: str, i: int, *, sizes: dict[str, int] | None = None,
               **kw) -> Path:
    """Stage, manifest and publish one fixture image; returns its published directory."""
    fields = image_fields(branch, i, **kw)
    stage = staging_dir(root)
    write_payload(stage, sizes, seed=fields["sha"])
    write_manifest(stage, fields)
    return publish(stage, root, branch, fields["name"])


class ServerProcess:
    """The embedded server (``python -m buildbot_kernel.imagetree.server``) in its own process on
    127.0.0.1, any free port.  Its own log (startup, errors, refusals) goes to ``<root>/../server.out``,
    a file rather than a pipe nobody drains, so tests can also assert that it holds no traceback."""

    def __init__(self, root: str | os.PathLike, access_log: str | os.PathLike, *args: str,
                 argv: list[str] | None = None):
        """``args``: more options for the server; ``argv``: another command instead, which prints
        ``at http://127.0.0.1:<port>/`` once it listens (farm-step's site, for instance)."""
        self.output = Path(root).parent / "server.out"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        argv = argv or [sys.executable, "-m", "buildbot_kernel.imagetree.server", "--root", str(root),
                        "--port", "0", "--access-log", str(access_log), *args]
        with open(self.output, "w") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = re.search(r"at (http://\S+/)", self.output.read_text())
            if m:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"image server did not start: {self.output.read_text()!r}")

    def log(self) -> str:
        return self.output.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def served_dir(prefix: str = "bbk-served-") -> Path:
    """A fresh 0755 directory in the system temp directory, whose parents everyone can enter.

    pytest's tmp_path lies under a 0700 directory, so a web server's ``www-data`` or NFS's ``nobody``
    could never reach a tree there, however correct the tree's own modes are.  The caller removes it.
    """
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    return d
