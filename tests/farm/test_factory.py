"""Settings -> farm objects (no VM is started)."""

import stat

import pytest

from buildbot_kernel.farm.driver import ShellPower
from buildbot_kernel.farm.factory import machine_server_url, make_farm
from buildbot_kernel.farm.qemu import QemuMachine
from buildbot_kernel.farm.testing import settings_toml
from buildbot_kernel.settings import Machine, SettingsError, parse

BASE = settings_toml(18011, "images", "http://localhost:18011", "")


def test_make_farm_from_settings(tmp_path):
    (tmp_path / "k").write_bytes(b"kernel")
    (tmp_path / "r.cpio.gz").write_bytes(b"ramfs")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "skl-1.key").write_text("c2tsLTEgc2VjcmV0IGtleSBmb3IgdGVzdHM=\n")
    (tmp_path / "keys" / "skl-1.key").chmod(0o600)
    text = BASE + f"""
[[machine]]
name = "vm"
type = "qemu"
stage1_kernel = "{tmp_path / 'k'}"
stage1_initrd = "r.cpio.gz"
accel = "tcg"
nic = "e1000"
[[machine]]
name = "skl-1"
power_cycle = "ipmitool -H skl-1-bmc chassis power cycle"
cmdline = "root=/dev/sda2 console=ttyS0"
install_modules = true
key_file = "keys/skl-1.key"
"""
    s = parse(text, str(tmp_path / "settings.toml"))
    farm = make_farm(s, tmp_path / "state.json", tmp_path / "work")
    vm = farm.driver("vm")
    qemu = farm.vms["vm"]
    assert isinstance(qemu, QemuMachine) and vm.server_url == "http://10.0.2.2:18011"
    assert vm.power.vm is qemu  # powered from a thread, never on the reactor
    assert vm.initrd.url == "http://10.0.2.2:18011/machines/vm/initrd"  # the ramfs doubles as local OS
    assert qemu.initrd == str(tmp_path / "r.cpio.gz")  # relative to the settings file
    cmd = qemu.command()
    assert cmd[cmd.index("-accel") + 1] == "tcg" and "e1000,netdev=net0" in cmd
    assert "bbk.machine=vm" in cmd[-1] and "bbk.server=http://10.0.2.2:18011" in cmd[-1]
    # a qemu machine without key_file gets a generated key under the work (state) directory, kept
    generated = tmp_path / "work" / "keys" / "vm.key"
    assert stat.S_IMODE(generated.stat().st_mode) == 0o600
    assert f"bbk.key={generated.read_text().strip()}" in cmd[-1] and farm.registry.authorized("vm", qemu.key)
    assert make_farm(s, tmp_path / "state.json", tmp_path / "work").registry.keys["vm"] == qemu.key
    assert farm.registry.keys["skl-1"] == "c2tsLTEgc2VjcmV0IGtleSBmb3IgdGVzdHM="
    hw = farm.driver("skl-1")
    assert isinstance(hw.power, ShellPower) and hw.initrd is None
    assert hw.server_url == "http://localhost:18011"
    assert sorted(m["name"] for m in farm.registry.snapshot()["machines"]) == ["skl-1", "vm"]
    assert farm.resource.poll == {"vm": 5, "skl-1": 5}


def test_server_url_setting_wins():
    m = Machine(name="x", type="qemu", server_url="http://10.0.2.2:9/")
    assert machine_server_url(m, "http://localhost:8011", 8011) == "http://10.0.2.2:9"


def test_remote_machine_needs_a_key_file(tmp_path):
    machine = '\n[[machine]]\nname = "skl-1"\npower_cycle = "true"\n'
    with pytest.raises(SettingsError) as e:
        parse(BASE + machine, str(tmp_path / "settings.toml"))
    assert "key_file" in str(e.value) and "head -c 32 /dev/urandom | base64 > keys/skl-1.key" in str(e.value)
    key = tmp_path / "skl-1.key"
    for content, mode, expect in (("short", 0o600, "characters"), ("two words here long", 0o600, "one word"),
                                  ("a-long-enough-key-1234", 0o644, "chmod 600"), (None, 0, "does not exist")):
        if content is None:
            key.unlink()
        else:
            key.write_text(content)
            key.chmod(mode)
        with pytest.raises(SettingsError, match=expect):
            parse(BASE + machine + 'key_file = "skl-1.key"\n', str(tmp_path / "settings.toml"))


def test_qemu_accelerator_is_logged_and_kept_for_the_dashboard(tmp_path):
    from twisted.python import log

    from buildbot_kernel.farm.testing import ReactorThread

    (tmp_path / "k").write_bytes(b"kernel")
    (tmp_path / "r.cpio.gz").write_bytes(b"ramfs")
    text = BASE + f'[[machine]]\nname = "vm"\ntype = "qemu"\nstage1_kernel = "{tmp_path / "k"}"\n' \
                  f'stage1_initrd = "{tmp_path / "r.cpio.gz"}"\naccel = "tcg"\n'
    farm = make_farm(parse(text, str(tmp_path / "settings.toml")), tmp_path / "state.json", tmp_path / "work")
    assert farm.registry.get("vm").accel == ""  # not known before the VM starts
    seen = []
    log.addObserver(seen.append)
    try:
        ReactorThread.call(lambda: farm.vms["vm"].command())  # what power-on runs, in the reactor's thread
    finally:
        log.removeObserver(seen.append)
    assert farm.registry.get("vm").accel == "tcg"
    assert {"name": "vm", "accel": "tcg"}.items() <= farm.registry.snapshot()["machines"][0].items()
    assert any("farm: machine vm: QEMU accelerator tcg" in " ".join(e.get("message", ())) for e in seen)
    assert '"accel": "tcg"' in (tmp_path / "state.json").read_text()
