"""A test machine that is a local QEMU VM: the ``qemu`` machine type, used by the tests and by users who
bisect boot problems without hardware.  Same code path as a lab machine: the VM's "firmware default"
is stage 1 (Debian's kernel + our ramfs, given with ``-kernel``/``-initrd``, which QEMU boots again after
every reset), so a power cycle brings it back to stage 1 exactly as on real hardware.

Networking is QEMU user mode: the guest reaches the host's 127.0.0.1 as 10.0.2.2, so all farm traffic
stays on loopback.  Acceleration: ``/dev/kvm`` can exist and still not boot a normal kernel (kvm-pvm hangs
at "Probing EDD"), so ``accel = "auto"`` uses KVM only after a real probe boot reaches the kernel
(:mod:`buildbot_kernel.farm.qemu_accel`, the one probe); otherwise TCG.  The accelerator chosen is written
at the top of every power-on in the console log and handed to ``on_accel`` (the farm logs it and keeps it
in the registry, which the dashboard shows).
The serial console of every boot is appended to ``<workdir>/<name>.console.log`` for debugging.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from buildbot_kernel.farm import qemu_accel

GUEST_HOST_ADDR = "10.0.2.2"  # the host's loopback as seen from QEMU user networking


def qemu_binary() -> str:
    path = shutil.which("qemu-system-x86_64")
    if not path:
        raise FileNotFoundError("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    return path


def _read_prompt(sock: socket.socket) -> None:
    seen = b""
    while not seen.rstrip().endswith(b"(qemu)"):
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("QEMU monitor closed the connection")
        seen = (seen + chunk)[-256:]


class QemuMachine:
    """One VM; ``soft_reboot``/``power_cycle`` are the power interface the driver calls."""

    def __init__(self, name: str, kernel: str, initrd: str, server_url: str, workdir: str | os.PathLike, *,
                 memory: int = 1024, accel: str = "auto", nic: str = "virtio", disk: str = "",
                 extra_append: str = "", key: str = "", on_accel=None):
        for what, p in (("stage1_kernel", kernel), ("stage1_initrd", initrd)):
            if not p or not os.path.isfile(p):
                raise FileNotFoundError(f"machine {name}: {what} {p!r} is not a file "
                                        "(made by buildbot_kernel/scripts/fetch-stage1-kernel and build-stage1-ramfs)")
        self.name = name
        self.kernel = kernel
        self.initrd = initrd
        self.server_url = server_url
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.memory = memory
        self.accel_setting = accel
        self.nic = {"virtio": "virtio-net-pci", "e1000": "e1000"}.get(nic, nic)
        self.disk = disk
        self.extra_append = extra_append
        self.key = key  # the machine key (bbk.key=): stage 1 sends it with every request
        self.console_log = self.workdir / f"{name}.console.log"
        self.monitor_path = self.workdir / f"{name}.monitor"
        self.proc: subprocess.Popen | None = None
        self.starts = 0  # power-ons
        self.resets = 0  # soft reboots of a running VM
        self._accel: str | None = None
        self.on_accel = on_accel  # called with the accelerator once it is known (the registry keeps it)

    @property
    def accel(self) -> str:
        if self._accel is None:
            self._accel = qemu_accel.choose_accel(self.kernel, qemu=qemu_binary(), setting=self.accel_setting)
            if self.on_accel is not None:
                self.on_accel(self._accel)
        return self._accel

    def command(self) -> list[str]:
        append = " ".join(p for p in ("console=ttyS0 panic=5", self.extra_append,
                                      f"bbk.server={self.server_url}", f"bbk.machine={self.name}",
                                      f"bbk.key={self.key}" if self.key else "") if p)
        cmd = [qemu_binary(), "-accel", self.accel, "-m", str(self.memory), "-smp", "1",
               "-nodefaults", "-display", "none", "-vga", "none",
               "-chardev", f"file,id=console,path={self.console_log},append=on", "-serial", "chardev:console",
               "-monitor", f"unix:{self.monitor_path},server=on,wait=off",
               "-netdev", "user,id=net0", "-device", f"{self.nic},netdev=net0",
               "-kernel", self.kernel, "-initrd", self.initrd, "-append", append]
        if self.accel == "kvm":
            cmd += ["-cpu", "host"]
        if self.disk:
            cmd += ["-drive", f"file={self.disk},if=virtio,format=raw"]
        return cmd

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def lost_power(self) -> str | None:
        """Why the VM is off though :meth:`stop` was not called (its QEMU process ended: killed, or
        crashed); None while it runs or before it was started.  Never blocks."""
        code = self.proc.poll() if self.proc is not None else None
        if code is None:
            return None
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return f"its QEMU process {how} (log: {self.workdir / (self.name + '.qemu.log')})"

    def start(self) -> None:
        if self.running:
            return
        with open(self.console_log, "ab") as f:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            f.write(f"\n==== bbk: power on {self.name} ({stamp}), QEMU accelerator {self.accel} ====\n".encode())
        err = open(self.workdir / f"{self.name}.qemu.log", "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        err.close()
        self.starts += 1

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def power_cycle(self) -> None:
        self.stop()
        self.start()

    def soft_reboot(self) -> None:
        """A reset through the firmware (stage 1 again); starts the VM if it is off."""
        if not self.running:
            self.start()
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(os.fspath(self.monitor_path))
                _read_prompt(s)
                self.resets += 1
                s.sendall(b"system_reset\n")
                _read_prompt(s)  # the command ran when the monitor prompts again
        except OSError:
            self.power_cycle()

    def console_tail(self, chars: int = 3000) -> str:
        try:
            with open(self.console_log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - chars))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""
