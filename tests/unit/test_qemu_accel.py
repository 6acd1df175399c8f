"""The accelerator choice (the one KVM probe): forced by the setting or the environment, tcg without a
usable /dev/kvm, the probe's verdict read from the console and cached per host boot in the user's cache
directory (the real KVM probe runs in the realkernel tests)."""

from __future__ import annotations

import pytest

from buildbot_kernel.farm import qemu_accel


def test_banner_means_the_kernel_started():
    assert qemu_accel.kernel_started(b"SeaBIOS\r\nLinux version 6.1.192 (gcc) #1\r\n")
    # a kvm-pvm hang: the firmware and the setup code speak, the kernel never does
    assert not qemu_accel.kernel_started(b"SeaBIOS (version 1.16.2)\r\nBooting from ROM...\r\nProbing EDD")


def test_environment_forces_the_choice_without_probing(tmp_path):
    missing_kernel = tmp_path / "no-such-bzImage"
    assert qemu_accel.choose_accel(missing_kernel, environ={qemu_accel.ENV_VAR: "tcg"}) == "tcg"
    assert qemu_accel.choose_accel(missing_kernel, environ={qemu_accel.ENV_VAR: "kvm"}) == "kvm"


def test_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(ValueError, match=qemu_accel.ENV_VAR + ".*kvm, tcg"):
        qemu_accel.choose_accel(tmp_path / "k", environ={qemu_accel.ENV_VAR: "hvf"})


def test_no_kvm_device_means_tcg_without_booting(tmp_path):
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"not a kernel")
    assert not qemu_accel.kvm_boots(kernel, kvm_device=tmp_path / "kvm", qemu="/nonexistent/qemu")
    cache = tmp_path / "cache" / "qemu-accel.json"
    accel = qemu_accel.choose_accel(kernel, kvm_device=tmp_path / "kvm", qemu="/nonexistent/qemu", environ={},
                                    cache=cache)
    assert accel == "tcg"
    # cached: the next process of this boot gets the answer without the probe kernel
    kernel.unlink()
    assert qemu_accel.choose_accel(kernel, kvm_device=tmp_path / "kvm", qemu="/nonexistent/qemu", environ={},
                                   cache=cache) == "tcg"
    # another device (or QEMU, or boot) is another question: probed again, and the kernel is missing now
    with pytest.raises(FileNotFoundError):
        qemu_accel.choose_accel(kernel, kvm_device=tmp_path / "kvm3", qemu="/nonexistent/qemu", environ={},
                                cache=cache)


def test_cache_lives_in_the_users_cache_directory(tmp_path):
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"not a kernel")
    env = {"BUILDBOT_KERNEL_CACHE": str(tmp_path / "c")}
    assert qemu_accel.choose_accel(kernel, kvm_device=tmp_path / "kvm", qemu="/nonexistent/qemu", environ=env) == "tcg"
    assert (tmp_path / "c" / qemu_accel.CACHE_FILE).is_file()


def test_setting_wins_and_a_wrong_one_is_named(tmp_path):
    env = {qemu_accel.ENV_VAR: "kvm"}
    assert qemu_accel.choose_accel(tmp_path / "none", setting="tcg", environ=env) == "tcg"
    with pytest.raises(ValueError, match="accel"):
        qemu_accel.choose_accel(tmp_path / "none", setting="hvf", environ={})


def test_missing_probe_kernel_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="probe kernel"):
        qemu_accel.choose_accel(tmp_path / "none", kvm_device=tmp_path / "kvm2", environ={},
                                cache=tmp_path / "c.json")


def test_probe_command_cannot_touch_the_network_or_wait_for_a_disk(tmp_path):
    cmd = qemu_accel.probe_command("qemu-system-x86_64", tmp_path / "bz")
    assert cmd[cmd.index("-accel") + 1] == "kvm"
    assert "-no-reboot" in cmd and cmd[cmd.index("-net") + 1] == "none"
    assert "panic=-1" in cmd[cmd.index("-append") + 1]
