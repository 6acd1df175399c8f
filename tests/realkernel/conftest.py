"""Fixtures for tests that build and boot a real Linux kernel (marker ``realkernel``).

``linux_tree`` is Debian's linux-source-6.1 as a git repository under ``<repo>/.cache/linux-tree``,
prepared once and reused across sessions; the tests skip only when that package is not installed
(CI installs it, so there they always run).  ``small_kernel`` is one build of the tree's HEAD with
configs/qemu-small.config, kept in ``.cache/realkernel/`` so a re-run rebuilds incrementally.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import kbuild_helper
import pytest

from buildbot_kernel import naming
from buildbot_kernel.farm.qemu_accel import choose_accel

BUILD_CACHE = kbuild_helper.REPO / ".cache" / "realkernel"
SMOKE_BRANCH = "realkernel/smoke"  # exercises the "/" -> "-" rule of the image name


@pytest.fixture(scope="session")
def linux_tree() -> Path:
    if kbuild_helper.source_tarball() is None:
        pytest.skip("Debian package linux-source-6.1 is not installed (scripts/install-deps installs it)")
    return kbuild_helper.prepare_tree(kbuild_helper.DEFAULT_TREE)


@dataclass(frozen=True)
class SmallKernel:
    tree: Path
    obj: Path
    bzimage: Path
    release: str  # make kernelrelease
    expected_name: str  # what buildbot_kernel.naming predicts for this commit
    build_seconds: float


def _git(tree: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(tree), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="session")
def small_kernel(linux_tree: Path) -> SmallKernel:
    sha = _git(linux_tree, "rev-parse", "HEAD")
    committed = int(_git(linux_tree, "log", "-1", "--format=%ct", "HEAD"))
    # the pipeline's layout (<builder dir>/work/src + /work/obj, ccache base = builder dir), so this build
    # and the pipeline's share ccache hits: CI pays for one clean kernel build, not two
    base = BUILD_CACHE / "small"
    src, obj = base / "work" / "src", base / "work" / "obj"
    if not (src / ".git").exists():
        subprocess.run(["git", "clone", "-q", "--shared", str(linux_tree), str(src)], check=True)
    _git(src, "checkout", "-q", "--detach", sha)
    built = kbuild_helper.build_kernel(
        src, obj, naming.config_localversion(SMOKE_BRANCH, sha, committed), ccache_base=base
    )
    version = kbuild_helper.make(src, obj, "kernelversion").strip()
    expected = naming.image_name(version, SMOKE_BRANCH, sha, committed, at_release_tag=False)
    return SmallKernel(src, obj, built.bzimage, built.release, expected, built.seconds)


@pytest.fixture(scope="session")
def qemu_accel(small_kernel: SmallKernel) -> str:
    """``kvm`` only if KVM really boots our kernel here, else ``tcg``."""
    return choose_accel(small_kernel.bzimage)
