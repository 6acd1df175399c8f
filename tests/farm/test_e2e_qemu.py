"""A real QEMU test machine driven through the real farm server: stage 1 (Debian's kernel + our ramfs)
fetches, verifies and kexecs into candidate images, stage 2 runs the test and reports, the next step is
kexec'd straight from stage 2, and the faults of the issue (garbage kernel, truncated kernel, a hanging
candidate, a kernel that is not the image, forged and replayed reports) each end where they must.

The candidates are Debian's kernel under its own release name (the only real kernel at hand without a
kernel build); a deliberately corrupted copy of it is the hanging candidate.  One VM serves the whole
module, in order, as a lab machine would serve one bisect.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from lane_ports import free_port

from buildbot_kernel.farm.driver import MachineDriver
from buildbot_kernel.farm.qemu import QemuMachine
from buildbot_kernel.farm.registry import Registry
from buildbot_kernel.farm.testing import (
    FarmServer,
    ReactorThread,
    settings_toml,
    stage1_artifacts,
    write_image,
)
from buildbot_kernel.farm.testing import http_post as _post
from buildbot_kernel.settings import Machine

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

MACHINE = Machine(name="vm1", type="qemu", boot_timeout=60, test_timeout=60, retries=1, poll=1,
                  install_modules=True, cmdline="console=ttyS0 panic=5")
KEY = "vm1-e2e-machine-key-0123456789"
MARK_TEST = 'test -f "/lib/modules/$(uname -r)/bbk-marker" && echo "MARK-OK $(uname -r)"'


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    if not os.path.exists("/usr/bin/qemu-system-x86_64"):
        pytest.skip("qemu-system-x86_64 is not installed (scripts/install-deps)")
    s1 = stage1_artifacts()
    tmp = tmp_path_factory.mktemp("farm")
    images = tmp / "images"
    images.mkdir()
    registry = Registry([MACHINE.name], tmp / "farm-state.json", keys={"vm1": KEY})
    server = FarmServer(images, registry, poll={"vm1": 1}, initrds={"vm1": s1.ramfs})
    server.start()
    vm = QemuMachine("vm1", s1.kernel, s1.ramfs, server.guest_url(), tmp / "vm", key=KEY)
    driver = MachineDriver(MACHINE, registry, vm, server.guest_url(), public_base=server.images_url,
                           initrd=server.initrd_file("vm1"))
    ns = type("Farm", (), {})()
    ns.s1, ns.images, ns.registry, ns.server, ns.vm, ns.driver = s1, images, registry, server, vm, driver
    ns.image = lambda name, vmlinuz=None, **kw: write_image(images, server.images_url, name,
                                                             vmlinuz or s1.kernel, **kw)
    ns.step = lambda entry, test, mode="test", drv=None: ReactorThread.call((drv or driver).run_step, entry,
                                                                             test, mode)
    yield ns
    vm.stop()
    server.stop()
    print(f"console log: {vm.console_log}")


def test_stage1_kexecs_candidate_and_stage2_reports(farm):
    entry = farm.image(farm.s1.release)
    out = farm.step(entry, MARK_TEST)
    assert out.verdict == "good", (out, farm.vm.console_tail())
    assert out.uname == entry["name"] == farm.s1.release
    assert f"MARK-OK {farm.s1.release}" in out.log_tail  # modules.tar.xz reached the candidate
    st = farm.registry.get("vm1")
    assert st.state == "idle" and st.last_kernel == farm.s1.release and st.last_report["result"] == "good"
    assert farm.vm.starts == 1


def test_next_step_kexecs_from_stage2_without_power(farm):
    power = (farm.vm.starts, farm.vm.resets)
    out = farm.step(farm.image(farm.s1.release), "echo planted regression; exit 1")
    assert out.verdict == "bad" and out.uname == farm.s1.release
    assert "planted regression" in out.log_tail
    assert (farm.vm.starts, farm.vm.resets) == power  # no firmware: kexec'd from the previous candidate


def test_released_machine_reboots_from_its_candidate_into_stage1(farm):
    """The bisect ended: the candidate's stage 2 is told REBOOT=1, and the VM's firmware boots stage 1."""
    import time

    assert "QEMU accelerator " + farm.vm.accel in farm.vm.console_tail(1 << 20)
    starts = farm.vm.starts
    ReactorThread.call(farm.driver.release)
    assert farm.registry.get("vm1").to_stage1
    deadline = time.monotonic() + 180
    while farm.registry.get("vm1").to_stage1 and time.monotonic() < deadline:
        time.sleep(0.5)  # cleared by the first poll from stage 1
    assert not farm.registry.get("vm1").to_stage1, farm.vm.console_tail()
    assert "bbk-stage2: released: rebooting into stage 1" in farm.vm.console_tail(1 << 20)
    assert farm.vm.starts == starts  # the guest rebooted itself: no power action


def test_replayed_and_forged_reports_are_refused(farm):
    used = [t for t, s in farm.registry.ledgers["vm1"].history.items() if s == "used"]
    assert used
    url = f"{farm.server.url}/machines/vm1/report"
    before = farm.registry.get("vm1").refused
    code, body = _post(url, {"result": "good", "token": used[-1], "uname": farm.s1.release}, key=KEY)
    assert code == 403 and "replayed" in body
    code, body = _post(url, {"result": "bad", "token": hashlib.sha256(b"x").hexdigest()[:32]}, key=KEY)
    assert code == 403 and "forged" in body
    code, body = _post(url, {"result": "good", "token": used[-1], "uname": farm.s1.release})
    assert code == 403 and "key" in body  # without the machine key the token is not even looked at
    st = farm.registry.get("vm1")
    assert st.refused == before + 2 and st.last_report["result"] == "bad"  # the real report stands


def test_uname_mismatch_is_skip_and_flags_machine(farm):
    entry = farm.image("6.1.0-99-bbk-not-this-kernel")  # Debian's kernel under another name
    out = farm.step(entry, "true")
    assert out.verdict == "skip" and out.uname == farm.s1.release
    assert "not the image" in out.reason
    assert "not the image" in farm.registry.get("vm1").flagged
    farm.registry.repair("vm1")


def test_garbage_kernel_is_reported_and_skipped(farm):
    entry = farm.image("6.1.0-98-bbk-garbage", vmlinuz=os.urandom(1 << 20))
    out = farm.step(entry, "true")
    assert out.verdict == "skip" and "kexec-load" in out.reason, out
    assert len(out.attempts) == 1  # an image fault is not retried


def test_truncated_kernel_is_caught_by_sha256(farm):
    full = Path(farm.s1.kernel).read_bytes()
    entry = farm.image("6.1.0-97-bbk-truncated", vmlinuz=full[: len(full) // 2],
                       announce_sha256=hashlib.sha256(full).hexdigest())
    out = farm.step(entry, "true")
    assert out.verdict == "skip" and "sha256" in out.reason, out
    assert farm.registry.get("vm1").state == "idle"


def test_hanging_candidate_is_power_cycled_retried_then_skipped(farm):
    data = bytearray(Path(farm.s1.kernel).read_bytes())
    mid = len(data) // 2  # inside the compressed payload: the decompressor halts the machine
    data[mid: mid + 4096] = bytes(4096)
    entry = farm.image("6.1.0-96-bbk-hangs", vmlinuz=bytes(data))
    quick = MachineDriver(replace(MACHINE, boot_timeout=30), farm.registry, farm.vm, farm.server.guest_url(),
                          public_base=farm.server.images_url, initrd=farm.server.initrd_file("vm1"))
    starts = farm.vm.starts
    out = farm.step(entry, "true", "test", drv=quick)
    assert out.verdict == "skip" and "boot failure" in out.reason, out
    assert len(out.attempts) == 2 and farm.vm.starts == starts + 1  # one power cycle between attempts
    assert not out.machine_broken and out.infra_failures == 0


def test_machine_recovers_after_hang(farm):
    resets = farm.vm.resets
    out = farm.step(farm.image(farm.s1.release), MARK_TEST)
    assert out.verdict == "good" and out.uname == farm.s1.release, (out, farm.vm.console_tail())
    assert farm.vm.resets == resets + 1  # the hung candidate got a reset through the firmware


def test_standalone_farm_step(farm, tmp_path):
    """`python -m buildbot_kernel.farm.standalone` (the `farm-step` command): its own server, its own VM."""
    import subprocess
    import sys

    REPO = Path(__file__).resolve().parents[2]  # the checkout, for the subprocess's PYTHONPATH

    port = free_port()
    machine = f"""
[[machine]]
name = "desk"
type = "qemu"
stage1_kernel = "{farm.s1.kernel}"
stage1_initrd = "{farm.s1.ramfs}"
accel = "{farm.vm.accel}"
boot_timeout = 60
cmdline = "console=ttyS0 panic=5"
"""
    (tmp_path / "settings.toml").write_text(settings_toml(port, str(farm.images), f"http://127.0.0.1:{port}",
                                                          machine))
    farm.image(farm.s1.release)
    url = f"http://127.0.0.1:{port}/farm-test/{farm.s1.release}/"
    p = subprocess.run([sys.executable, "-m", "buildbot_kernel.farm.standalone", "--settings",
                        str(tmp_path / "settings.toml"), "--machine", "desk", "--image", url, "--test",
                        "uname -r; exit 1", "--mode", "test", "--state", str(tmp_path / "state.json"),
                        "--workdir", str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["verdict"] == "bad" and out["uname"] == farm.s1.release and farm.s1.release in out["log_tail"]
