"""The real kernel, end to end: built with our config fragment, booted in QEMU, it names itself as the
image naming contract says (``uname -r`` == ``make kernelrelease`` == ``naming.image_name``, ending in
``+``), loads a module from its modules_install tree and reaches the host over QEMU user networking, as
a stage-2 test machine must to report."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import kbuild_helper
import pytest
from httpstub import answering

pytestmark = pytest.mark.realkernel


def _initramfs(dest: Path, modules_root: Path, port: int) -> Path:
    extra = {"bin/dhcp-script": (0o100755, kbuild_helper.DHCP_SCRIPT.encode())}
    staging = modules_root.parent.parent.parent  # <staging>/lib/modules/<release>
    for path in [modules_root.parent, modules_root, *sorted(modules_root.rglob("*"))]:
        if path.is_symlink():  # build -> the object directory
            continue
        name = path.relative_to(staging).as_posix()
        extra[name] = (0o040755, b"") if path.is_dir() else (0o100644, path.read_bytes())
    init = (
        kbuild_helper.INIT_PREAMBLE
        + f"""
echo "UNAME=$(uname -r)"
modprobe dummy && ip link show dummy0 >/dev/null && echo MODULE-OK
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -n -q -t 10 -s /bin/dhcp-script
timeout 30 wget -q -O /dev/null "http://10.0.2.2:{port}/report?uname=$(uname -r)" && echo REPORT-SENT
reboot -f
"""
    )
    return kbuild_helper.busybox_initramfs(dest, init, extra)


def test_small_kernel_boots_with_its_image_name(small_kernel, qemu_accel, tmp_path):
    assert small_kernel.release == small_kernel.expected_name
    assert small_kernel.release.endswith("_+"), "a clean untagged tree must give the '+' suffix"

    modules = kbuild_helper.modules_install(small_kernel.tree, small_kernel.obj, tmp_path / "staging")
    assert (modules / "kernel" / "drivers" / "net" / "dummy.ko").is_file()
    assert (modules / "modules.dep").is_file(), "modules_install ran no depmod: install the kmod package"

    with answering(b"ok\n") as report:
        initrd = _initramfs(tmp_path / "initrd.gz", modules, report.port)
        cmd = kbuild_helper.qemu_command(
            small_kernel.bzimage, initrd, "console=ttyS0 panic=-1 quiet", accel=qemu_accel
        )
        start = time.monotonic()
        console = kbuild_helper.boot(cmd, timeout=180)
        boot_seconds = time.monotonic() - start

    print(f"build {small_kernel.build_seconds:.1f}s, boot ({qemu_accel}) {boot_seconds:.1f}s")
    assert f"UNAME={small_kernel.release}\n" in console, console[-3000:]
    assert "MODULE-OK" in console, console[-3000:]
    assert "REPORT-SENT" in console, console[-3000:]
    assert report.paths == [f"/report?uname={small_kernel.release}"]


@pytest.mark.skipif(
    shutil.which("kexec") is None, reason="needs kexec-tools (scripts/install-deps installs it)"
)
def test_small_kernel_kexecs_into_the_next_candidate(small_kernel, qemu_accel, tmp_path):
    """Stage 2 kexecs straight into the next candidate: the config must have KEXEC and be relocatable."""
    second = kbuild_helper.busybox_initramfs(
        tmp_path / "second.gz",
        kbuild_helper.INIT_PREAMBLE + 'echo "SECOND=$(uname -r) $(cat /proc/cmdline)"\nreboot -f\n',
    )
    extra = kbuild_helper.binary_with_libs(Path(shutil.which("kexec")).resolve())
    extra["boot"] = (0o040755, b"")
    extra["boot/bzImage"] = (0o100644, small_kernel.bzimage.read_bytes())
    extra["boot/initrd.gz"] = (0o100644, second.read_bytes())
    init = (
        kbuild_helper.INIT_PREAMBLE
        + """
kexec -l /boot/bzImage --initrd=/boot/initrd.gz --append="console=ttyS0 panic=-1 quiet stage=2" && echo LOADED
kexec -e
echo KEXEC-FAILED
reboot -f
"""
    )
    first = kbuild_helper.busybox_initramfs(tmp_path / "first.gz", init, extra)
    cmd = kbuild_helper.qemu_command(
        small_kernel.bzimage, first, "console=ttyS0 panic=-1 quiet", accel=qemu_accel
    )
    start = time.monotonic()
    console = kbuild_helper.boot(cmd, timeout=180)
    print(f"boot + kexec + boot ({qemu_accel}) {time.monotonic() - start:.1f}s")
    assert "LOADED" in console, console[-3000:]
    assert f"SECOND={small_kernel.release} console=ttyS0 panic=-1 quiet stage=2" in console, console[-3000:]
