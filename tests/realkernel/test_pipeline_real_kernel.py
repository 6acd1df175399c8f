"""A real Linux kernel through the same builder as every branch: real master, real worker, Kbuild.

The tree is Debian's linux-source-6.1 made into a git repository (scripts/prepare-linux-tree); the build
config is tinyconfig + configs/qemu-small.config.  The first build is clean, the second (after a
one-file commit) reuses the worker's persistent tree and object directory.  The published image must
boot in QEMU and say its own name through ``uname -r``.
"""

from __future__ import annotations

import json
import lzma
import re
import subprocess
import tarfile

import kbuild_helper
import pytest
from integration.harness import Master, Worker, free_port, git, settings_text, wait_for

from buildbot_kernel.farm.qemu_accel import choose_accel
from buildbot_kernel.imagetree import package

pytestmark = [pytest.mark.realkernel, pytest.mark.integration]
BRANCH = "linux-6.1.y"
CONFIG = kbuild_helper.REPO / "configs" / "qemu-small.config"


@pytest.fixture(scope="module")
def kernel_farm(linux_tree, tmp_path_factory):
    base = tmp_path_factory.mktemp("realkernel-pipeline")
    upstream = base / "linux.git"
    # a clone that shares the prepared tree's objects: instant, and commits stay out of the cached tree
    subprocess.run(["git", "clone", "-q", "--shared", "--bare", str(linux_tree), str(upstream)], check=True)
    git(upstream, "branch", "-f", BRANCH, "HEAD")
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    extra_build = f'fragments = ["{CONFIG}"]\n'
    text = settings_text(str(upstream), [BRANCH], ports, poll=2).replace(
        'config = "defconfig"\n', f'config = "tinyconfig"\n{extra_build}')
    master = Master(base, text)
    worker = Worker(base, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    worker.start()
    yield base, upstream, master
    worker.stop()
    master.stop()


def published(master):
    d = master.dir / "images" / BRANCH
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def test_real_kernel_image_is_named_by_its_kernelrelease_and_boots(kernel_farm, tmp_path):
    base, upstream, master = kernel_farm
    wait_for(lambda: published(master) and master.idle(), 1500, "the first real kernel image")
    [name] = published(master)
    image = master.dir / "images" / BRANCH / name
    assert package.verify_image_dir(image) == []
    meta = json.loads((image / "metadata.json").read_text())
    assert meta["sha"] == git(upstream, "rev-parse", BRANCH)
    day = meta["commit_date"][:10].replace("-", "")
    assert name.startswith("6.1.") and name.endswith(f"-{BRANCH}_{meta['sha'][:6]}_{day}_+")
    with tarfile.open(image / "modules.tar.xz") as t:
        assert f"lib/modules/{name}/kernel/drivers/net/dummy.ko" in t.getnames()
    # the image says its own name when it boots
    initrd = kbuild_helper.busybox_initramfs(tmp_path / "initrd.gz", kbuild_helper.INIT_PREAMBLE +
                                             'echo "UNAME=$(uname -r)"\nreboot -f\n')
    console = kbuild_helper.boot(kbuild_helper.qemu_command(image / "vmlinuz", initrd, "console=ttyS0 panic=-1",
                                                            accel=choose_accel(image / "vmlinuz")), timeout=180)
    assert f"UNAME={name}" in console
    print(f"clean build through the pipeline: {meta['build_seconds']} s")


def test_one_file_commit_rebuilds_incrementally(kernel_farm):
    base, upstream, master = kernel_farm
    first = json.loads(next((master.dir / "images" / BRANCH).glob("*/metadata.json")).read_text())
    work = base / "dev"
    subprocess.run(["git", "clone", "-q", "--shared", "-b", BRANCH, str(upstream), str(work)], check=True)
    dummy = work / "drivers" / "net" / "dummy.c"
    dummy.write_text(dummy.read_text() + "\n/* buildbot-kernel: one-file change */\n")
    git(work, "commit", "-q", "-am", "net: dummy: touch one file")
    git(work, "push", "-q", "origin", BRANCH)
    wait_for(lambda: len(published(master)) == 2 and master.idle(), 900, "the incremental image")
    metas = [json.loads(p.read_text()) for p in (master.dir / "images" / BRANCH).glob("*/metadata.json")]
    second = [m for m in metas if m["sha"] != first["sha"]][0]
    assert second["sha"] == git(upstream, "rev-parse", BRANCH)
    # incremental = the persistent tree and object directory were reused: the compile step's own log
    # (build.log.xz) shows the one changed file compiled again, not the kernel.  Counted, not timed: how
    # long a build takes depends on ccache and the machine (bench/bench_pipeline.py prints the times).
    images = {m["sha"]: master.dir / "images" / BRANCH / m["name"] for m in metas}
    clean, incremental = compiled_objects(images[first["sha"]]), compiled_objects(images[second["sha"]])
    print(f"clean {first['build_seconds']} s, {len(clean)} objects; incremental {second['build_seconds']} s, "
          f"{len(incremental)} objects: {incremental}")
    assert len(clean) > 100 and "drivers/net/dummy.o" in incremental and len(incremental) * 10 < len(clean)


def compiled_objects(image) -> list[str]:
    """The objects Kbuild's ``CC`` lines name in the image's compile log."""
    with lzma.open(image / "build.log.xz", "rt", errors="replace") as f:
        return [m.group(1) for m in re.finditer(r"^\s*CC(?: \[M\])?\s+(\S+\.o)\s*$", f.read(), re.M)]
