"""Stage-1 artifacts for QEMU machines and tests: Debian's kernel and our ramfs, made by the scripts.

The scripts are the admin's tools (buildbot_kernel/scripts/fetch-stage1-kernel, build-stage1-ramfs, shipped
as package data); this only runs them into ``<cache>/farm`` (``$BUILDBOT_KERNEL_CACHE``, else the user's
cache directory, see :mod:`buildbot_kernel.resources`) and rebuilds the ramfs when a stage script changed.
"""

from __future__ import annotations

import fcntl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from buildbot_kernel import resources


@dataclass
class Stage1:
    kernel: str
    release: str
    modules_dir: str
    ramfs: str


def stage1_artifacts(cache: Path | None = None) -> Stage1:
    """Debian's kernel (fetched once) and our ramfs (rebuilt when a script changed)."""
    cache = cache or resources.cache_dir() / "farm"
    cache.mkdir(parents=True, exist_ok=True)
    # one maker at a time: two masters on one host (or a master and the test suite's other lane) starting
    # at once would each fetch into the same directory and write the same ramfs
    with open(cache / ".stage1.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _make(cache)


def _make(cache: Path) -> Stage1:
    scripts = resources.scripts_dir()
    out = subprocess.run([str(scripts / "fetch-stage1-kernel"), str(cache / "stage1")],
                         check=True, capture_output=True, text=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    ramfs = cache / "stage1.cpio.gz"
    sources = [scripts / "build-stage1-ramfs", *(scripts / "stage1").iterdir(), *(scripts / "stage2").iterdir()]
    if not ramfs.exists() or max(p.stat().st_mtime for p in sources) > ramfs.stat().st_mtime:
        subprocess.run([str(scripts / "build-stage1-ramfs"), str(ramfs), "--kernel-release",
                        env["RELEASE"], "--modules-dir", env["MODULES_DIR"]], check=True, capture_output=True)
    return Stage1(env["KERNEL"], env["RELEASE"], env["MODULES_DIR"], str(ramfs))


