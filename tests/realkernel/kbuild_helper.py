"""Build and boot real Linux kernels for fixtures: the real-kernel smoke test and the QEMU farm e2e.

This is test scaffolding, not the product's build pipeline (the builder steps do that with ccache, upload
and publishing): it turns the prepared linux-source tree into a small bzImage with
``configs/qemu-small.config`` and boots it in QEMU with a busybox initramfs, so tests can compare what a
running kernel says (``uname -r``) with what Kbuild said (``make kernelrelease``).

Also a command line, for building candidate images by hand or from other test suites::

    python tests/realkernel/kbuild_helper.py --obj OBJ --localversion=-br_abcdef_20260101_ [--tree T]
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREPARE_SCRIPT = REPO / "scripts" / "prepare-linux-tree"
SMALL_FRAGMENT = REPO / "configs" / "qemu-small.config"
DEFAULT_TREE = REPO / ".cache" / "linux-tree"
# fixed so two builds of one commit produce the same bits (and ccache can hit)
BUILD_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC",
    "KBUILD_BUILD_USER": "buildbot-kernel",
    "KBUILD_BUILD_HOST": "buildbot-kernel",
}
_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


class KbuildError(RuntimeError):
    """A make invocation failed; the message carries the command and the tail of its output."""


def source_tarball() -> Path | None:
    """Where Debian's linux-source-6.1 package put its tarball, or None when it is not installed."""
    try:
        listed = subprocess.run(
            ["dpkg-query", "-L", "linux-source-6.1"], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        listed = ""
    for line in listed.splitlines():
        if line.endswith("/linux-source-6.1.tar.xz") and Path(line).is_file():
            return Path(line)
    return None


def prepare_tree(dest: Path = DEFAULT_TREE) -> Path:
    """Run scripts/prepare-linux-tree (cached: seconds when ``dest`` is already prepared)."""
    out = subprocess.run([str(PREPARE_SCRIPT), str(dest)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise KbuildError(f"{PREPARE_SCRIPT.name} {dest} failed: {out.stderr.strip()}")
    return Path(out.stdout.strip().splitlines()[-1])


def parse_config(text: str) -> dict[str, str | None]:
    """``CONFIG_X`` -> value, ``None`` for ``# CONFIG_X is not set``; other lines are ignored."""
    values: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _SET.match(line):
            values[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            values[m.group(1)] = None
    return values


def fragment_mismatches(fragment: str, config: str) -> list[str]:
    """Fragment lines that ``olddefconfig`` did not keep (a missing dependency drops them silently)."""
    final = parse_config(config)
    problems = []
    for name, want in parse_config(fragment).items():
        got = final.get(name)
        if got != want:
            shown = "not set" if got is None else got
            problems.append(
                f"{name}: fragment wants {'not set' if want is None else want}, .config has {shown}"
            )
    return problems


def make_env() -> dict[str, str]:
    """The environment for every make call: fixed build stamps, ``LOCALVERSION`` unset (keeps the ``+``)."""
    env = {k: v for k, v in os.environ.items() if k != "LOCALVERSION"}
    env.update(BUILD_ENV)
    return env


def make(tree: Path, obj: Path, *targets: str, jobs: int = 1, capture: bool = True,
         ccache_base: Path | None = None) -> str:
    """``ccache_base``: compile through ccache with that base directory, as the pipeline does with the
    builder directory; with the same ``<base>/src`` + ``<base>/obj`` layout the two share cache hits."""
    cmd = ["make", "-s" if capture else "", f"-j{jobs}", "-C", str(tree), f"O={obj}", *targets]
    env = make_env()
    if ccache_base is not None and shutil.which("ccache"):
        cmd.append("CC=ccache gcc")
        env["CCACHE_BASEDIR"] = str(ccache_base)
    cmd = [c for c in cmd if c]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-30:])
        raise KbuildError(f"{' '.join(cmd)} failed (exit {out.returncode}):\n{tail}")
    return out.stdout


def configure(
    tree: Path, obj: Path, localversion: str, fragments: tuple[Path, ...] = (SMALL_FRAGMENT,)
) -> None:
    """tinyconfig + fragments + CONFIG_LOCALVERSION, then check every fragment line survived."""
    if re.search(r'[\s"\\]', localversion):
        raise ValueError(
            f"localversion {localversion!r}: no spaces, quotes or backslashes (it becomes a file name)"
        )
    obj.mkdir(parents=True, exist_ok=True)
    make(tree, obj, "tinyconfig")
    wanted = "".join(Path(f).read_text() + "\n" for f in fragments)
    wanted += f'CONFIG_LOCALVERSION="{localversion}"\n'
    config = obj / ".config"
    config.write_text(config.read_text() + wanted)
    make(tree, obj, "olddefconfig")
    problems = fragment_mismatches(wanted, config.read_text())
    if problems:
        raise KbuildError("config fragment not applied (missing dependency?): " + "; ".join(problems))


def kernelrelease(tree: Path, obj: Path) -> str:
    """Kbuild's name for the build; only meaningful once include/config/auto.conf exists (after a build)."""
    return make(tree, obj, "kernelrelease").strip()


@dataclass(frozen=True)
class KernelBuild:
    bzimage: Path
    release: str
    seconds: float


def build_kernel(
    tree: Path, obj: Path, localversion: str, *, jobs: int | None = None, reconfigure: bool = True,
    ccache_base: Path | None = None,
) -> KernelBuild:
    """Configure (unless told not to) and build bzImage + modules out of tree in ``obj``."""
    if reconfigure or not (obj / ".config").exists():
        configure(tree, obj, localversion)
    start = time.monotonic()
    make(tree, obj, "bzImage", "modules", jobs=jobs or os.cpu_count() or 1, ccache_base=ccache_base)
    return KernelBuild(obj / "arch/x86/boot/bzImage", kernelrelease(tree, obj), time.monotonic() - start)


def modules_install(tree: Path, obj: Path, staging: Path) -> Path:
    """Install the modules under ``staging/lib/modules/<release>`` (no depmod surprises: same tree)."""
    make(tree, obj, f"INSTALL_MOD_PATH={staging}", "modules_install")
    return staging / "lib" / "modules" / kernelrelease(tree, obj)


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An initramfs archive in the kernel's newc format: (path, mode, data) entries, owned by root."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def busybox_initramfs(
    dest: Path, init_script: str, extra: dict[str, tuple[int, bytes]] | None = None
) -> Path:
    """A gzip initramfs with Debian's static busybox as every tool and ``init_script`` as /init.

    Written in Python (no cpio, no root) because the archive needs root-owned entries.  There is no
    /dev/console node in it: the init script mounts devtmpfs and reopens its stdio on /dev/console.
    """
    busybox = shutil.which("busybox")
    if not busybox:
        raise FileNotFoundError("busybox not found: install the Debian package busybox-static")
    dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "lib"]
    entries: list[tuple[str, int, bytes]] = [(d, 0o040755, b"") for d in dirs]
    entries += [
        ("bin/busybox", 0o100755, Path(busybox).read_bytes()),
        ("init", 0o100755, init_script.encode()),
    ]
    for name, (mode, data) in (extra or {}).items():
        entries.append((name, mode, data))
    dest.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=6, mtime=0))
    return dest


def binary_with_libs(path: Path) -> dict[str, tuple[int, bytes]]:
    """Initramfs entries for a dynamically linked program and the shared libraries ``ldd`` lists."""
    listing = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout
    libs = [
        p
        for line in listing.splitlines()
        if (p := line.split("=>")[-1].split("(")[0].strip()).startswith("/")
    ]
    entries: dict[str, tuple[int, bytes]] = {}
    for file in [*libs, str(path)]:
        parts = Path(file).parts[1:]
        for depth in range(1, len(parts)):  # parent directories first, as the kernel's unpacker needs
            entries.setdefault("/".join(parts[:depth]), (0o040755, b""))
        entries["/".join(parts)] = (0o100755, Path(file).resolve().read_bytes())
    return entries


# The start of every test init: tools, /dev, /proc, /sys and a console to talk on.
INIT_PREAMBLE = """#!/bin/busybox sh
/bin/busybox --install -s
mount -t devtmpfs dev /dev
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
"""

# udhcpc calls this with the lease in its environment; busybox-static ships no default script
DHCP_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add "$ip/${mask:-24}" dev "$interface"
ip route add default via "$router"
"""


def qemu_command(
    kernel: Path, initrd: Path, append: str, *, accel: str, nic: str = "virtio-net-pci", memory_mb: int = 256
) -> list[str]:
    """One VM on QEMU user networking (the guest sees the host's 127.0.0.1 as 10.0.2.2); exits on reboot."""
    return [
        "qemu-system-x86_64", "-accel", accel, "-m", str(memory_mb), "-nographic", "-no-reboot",
        "-monitor", "none", "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
        "-netdev", "user,id=n0", "-device", f"{nic},netdev=n0",
    ]  # fmt: skip


def boot(cmd: list[str], timeout: float) -> str:
    """Run the VM until it exits (the init ends with ``reboot -f``); its serial console as text."""
    try:
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        console = (e.stdout or b"").decode(errors="replace")
        raise TimeoutError(f"QEMU did not exit within {timeout}s; console tail:\n{console[-3000:]}") from e
    return (out.stdout + out.stderr).decode(errors="replace").replace("\r\n", "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a small QEMU-bootable kernel from a prepared tree.")
    parser.add_argument("--tree", type=Path, default=DEFAULT_TREE, help="prepared tree (created if missing)")
    parser.add_argument("--obj", type=Path, required=True, help="out-of-tree build directory (make O=)")
    parser.add_argument(
        "--localversion",
        required=True,
        help="CONFIG_LOCALVERSION; give it as --localversion=-br_abcdef_20260101_ (it starts with -)",
    )
    parser.add_argument("--modules-to", type=Path, help="also modules_install into this staging directory")
    args = parser.parse_args(argv)
    tree = prepare_tree(args.tree)
    try:
        built = build_kernel(tree, args.obj.resolve(), args.localversion)
        if args.modules_to:
            modules_install(tree, args.obj.resolve(), args.modules_to.resolve())
    except (KbuildError, ValueError) as e:
        print(f"kbuild_helper: {e}", file=sys.stderr)
        return 1
    print(f"release={built.release}\nbzimage={built.bzimage}\nseconds={built.seconds:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
