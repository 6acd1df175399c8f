"""Pick QEMU's accelerator by booting a kernel, not by looking at ``/dev/kvm``.

A ``/dev/kvm`` that opens is not a KVM that boots Linux: on kvm-pvm hosts (nested in a cloud VM) a normal
kernel hangs in its real-mode setup code ("Probing EDD") and never prints a line.  So the probe boots the
caller's kernel for a few seconds with ``-accel kvm`` and calls KVM usable only if the kernel itself
printed its banner on the serial console; anything else falls back to ``tcg``, which is slow but always
works.  The answer is a property of the host, so it is computed once per process.

``BUILDBOT_KERNEL_QEMU_ACCEL=kvm|tcg`` skips the probe (for hosts where the answer is known).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from pathlib import Path

ENV_VAR = "BUILDBOT_KERNEL_QEMU_ACCEL"
ACCELS = ("kvm", "tcg")
KVM_DEVICE = Path("/dev/kvm")
# printed by start_kernel() once the kernel runs, after decompression and the real-mode setup code
BANNER = b"Linux version "
DEFAULT_QEMU = "qemu-system-x86_64"



def probe_command(qemu: str, kernel: str | os.PathLike[str]) -> list[str]:
    """A KVM boot that can only print to the serial console and exits on the kernel's panic.

    No root file system is given, so a working kernel panics quickly; ``panic=-1`` reboots at once and
    ``-no-reboot`` turns that reboot into QEMU exiting.
    """
    return [
        qemu, "-accel", "kvm", "-m", "256", "-nographic", "-no-reboot", "-monitor", "none",
        "-net", "none", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
    ]  # fmt: skip


def kernel_started(console: bytes) -> bool:
    """The probe's verdict from the console bytes alone (pure, so the rule is testable)."""
    return BANNER in console


def _boot_output(cmd: list[str], timeout: float) -> bytes:
    """Run ``cmd``, return its output up to the banner, its exit or the deadline, whichever comes first."""
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = b""
    try:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while not kernel_started(out):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                chunk = proc.stdout.read()
                if not chunk:  # EOF: QEMU exited (no KVM, bad kernel, ...)
                    break
                out += chunk
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    return out


def kvm_boots(
    kernel: str | os.PathLike[str],
    *,
    qemu: str = DEFAULT_QEMU,
    timeout: float = 8.0,
    kvm_device: Path = KVM_DEVICE,
) -> bool:
    """True when a kernel started under ``-accel kvm`` within ``timeout`` seconds."""
    if not os.access(kvm_device, os.R_OK | os.W_OK):
        return False
    return kernel_started(_boot_output(probe_command(qemu, kernel), timeout))


def choose_accel(
    kernel: str | os.PathLike[str],
    *,
    qemu: str = DEFAULT_QEMU,
    timeout: float = 8.0,
    kvm_device: Path = KVM_DEVICE,
    environ: dict[str, str] | None = None,
) -> str:
    """``"kvm"`` if this host's KVM really boots ``kernel``, else ``"tcg"``.

    ``kernel`` is any bzImage with an 8250 serial console built in (Debian's kernel, or one of ours).
    One probe boot per call: the caller keeps the answer (a session fixture, a machine object).
    """
    env = os.environ if environ is None else environ
    forced = env.get(ENV_VAR, "").strip()
    if forced:
        if forced not in ACCELS:
            raise ValueError(f"{ENV_VAR}={forced!r}: expected one of {', '.join(ACCELS)} (or unset to probe)")
        return forced
    if not Path(kernel).is_file():
        raise FileNotFoundError(f"probe kernel {kernel} does not exist (needed to test whether KVM boots)")
    return "kvm" if kvm_boots(kernel, qemu=qemu, timeout=timeout, kvm_device=kvm_device) else "tcg"
