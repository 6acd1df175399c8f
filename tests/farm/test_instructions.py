"""Boot instructions and single-use tokens (pure)."""

from dataclasses import replace

import pytest

from buildbot_kernel.farm import instructions as ins
from buildbot_kernel.settings import Machine

SHA = "ab" * 32
MACHINE = Machine(name="skl-1", cmdline="console=ttyS0 root=/dev/sda2", install_modules=True)


def entry(**kw):
    e = {"name": "6.1.0-drm-tip_abcdef_20240101_+", "url": "http://localhost:8011/drm-tip/x/",
         "files": {"vmlinuz": {"size": 1, "sha256": SHA}, "modules.tar.xz": {"size": 1, "sha256": "cd" * 32}}}
    e.update(kw)
    return e


def test_assignment_renders_what_stage1_parses():
    a = ins.make_assignment(MACHINE, entry(), "true", "boot", "http://10.0.2.2:8011",
                            public_base="http://localhost:8011")
    got = ins.parse(ins.render(a))
    assert got["NAME"] == "6.1.0-drm-tip_abcdef_20240101_+"
    assert got["KERNEL_URL"] == "http://10.0.2.2:8011/drm-tip/x/vmlinuz"  # rebased for the machine
    assert got["KERNEL_SHA256"] == SHA
    assert got["MODULES_URL"].endswith("/modules.tar.xz") and got["MODULES_SHA256"] == "cd" * 32
    assert "INITRD_URL" not in got
    assert got["TOKEN"] == a.token and len(a.token) == 32
    cmd = got["CMDLINE"].split()
    assert cmd[:2] == ["console=ttyS0", "root=/dev/sda2"]
    assert f"bbk.token={a.token}" in cmd and "bbk.machine=skl-1" in cmd and "bbk.stage=2" in cmd
    assert "bbk.server=http://10.0.2.2:8011" in cmd
    # the machine key is never part of the instructions: stage 1 appends its own bbk.key= when it kexecs
    assert not [w for w in cmd if w.startswith("bbk.key")]


def test_modules_only_when_configured_and_initrd_passed_through():
    a = ins.make_assignment(replace(MACHINE, install_modules=False), entry(), "true", "test", "http://h:1",
                            initrd=ins.BootFile("http://h:1/machines/skl-1/initrd", SHA))
    got = ins.parse(ins.render(a))
    assert "MODULES_URL" not in got and got["INITRD_URL"] == "http://h:1/machines/skl-1/initrd"


def test_tokens_are_fresh_per_assignment():
    tokens = {ins.make_assignment(MACHINE, entry(), "true", "boot", "http://h:1").token for _ in range(50)}
    assert len(tokens) == 50


@pytest.mark.parametrize("bad, field", [
    (dict(url="http://h/x"), "url"),
    (dict(name=""), "name"),
    (dict(files={}), "files.vmlinuz"),
    (dict(files={"vmlinuz": {"sha256": "XYZ"}}), "files.vmlinuz.sha256"),
])
def test_bad_image_entries_name_the_field(bad, field):
    with pytest.raises(ins.InstructionError, match=field.replace(".", r"\.")):
        ins.make_assignment(MACHINE, entry(**bad), "true", "boot", "http://h:1")


def test_bad_mode_and_server_url():
    with pytest.raises(ins.InstructionError, match="mode"):
        ins.make_assignment(MACHINE, entry(), "true", "bisect", "http://h:1")
    with pytest.raises(ins.InstructionError, match="server URL"):
        ins.make_assignment(MACHINE, entry(), "true", "boot", "h:1")


def test_a_newline_cannot_smuggle_a_key():
    with pytest.raises(ins.InstructionError, match="CMDLINE"):
        ins.make_assignment(replace(MACHINE, cmdline="quiet\nKERNEL_URL=http://evil/"), entry(), "true", "boot",
                            "http://h:1")


def test_wait_and_rebase():
    assert ins.parse(ins.render_wait(7)) == {"WAIT": "7"}
    assert ins.rebase_url("http://a:1/x/y", "http://a:1", "http://b:2/") == "http://b:2/x/y"
    assert ins.rebase_url("http://other/x", "http://a:1", "http://b:2") == "http://other/x"
    assert ins.rebase_url("http://a:10/x", "http://a:1", "http://b:2") == "http://a:10/x"


def test_assignment_json_roundtrip():
    a = ins.make_assignment(MACHINE, entry(), "true", "boot", "http://h:1",
                            initrd=ins.BootFile("http://h:1/i", SHA))
    assert ins.Assignment.from_json(a.to_json()) == a


def test_token_ledger_tells_forged_replayed_stale():
    led = ins.TokenLedger()
    led.issue("t1")
    assert led.judge("t1") == "ok"
    led.issue("t2")
    assert led.judge("t1") == "stale" and led.judge("t2") == "ok"
    led.consume("t2")
    assert led.judge("t2") == "replayed"
    assert led.judge("nope") == "forged" and led.judge("") == "forged"
    led.issue("t3")
    led.withdraw()
    assert led.judge("t3") == "stale"


def test_token_ledger_is_bounded():
    led = ins.TokenLedger(keep=4)
    for i in range(10):
        led.issue(f"t{i}")
    assert len(led.history) == 4 and led.judge("t0") == "forged" and led.judge("t9") == "ok"
