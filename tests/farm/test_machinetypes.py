"""Machine types as data: the registry, settings validation per type, and the pdudaemon type's power
against a real pdudaemon server with its localcmdline driver: the first ``pdudaemon`` on PATH, else
Debian's package (scripts/install-deps).  PyPI's pdudaemon 1.1.1 (whose systemd-python dependency needs
libsystemd-dev to build) passes these tests too: put its venv's bin/ first on PATH."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from lane_ports import free_port

from buildbot_kernel import machinetypes
from buildbot_kernel.farm.driver import PowerError
from buildbot_kernel.farm.factory import make_farm
from buildbot_kernel.farm.testing import ReactorThread, settings_toml
from buildbot_kernel.machinetypes.pdu import PduDaemon, PduPower
from buildbot_kernel.settings import SettingsError, parse

BASE = settings_toml(18011, "images", "http://localhost:18011", "")
PDUDAEMON = shutil.which("pdudaemon") or "/usr/sbin/pdudaemon"


def test_registry_has_the_three_types_and_their_rules():
    types = machinetypes.registry()
    assert set(types) >= {"remote", "qemu", "pdudaemon"}
    assert types["qemu"].generated_key and types["qemu"].builtin_stage1 and types["qemu"].guest_address == "10.0.2.2"
    assert not types["remote"].generated_key and "power_cycle" in types["remote"].required
    assert set(types["pdudaemon"].required) == {"pdu_daemon", "pdu_hostname", "pdu_port"}
    with pytest.raises(machinetypes.MachineTypeError, match="known: .*qemu"):
        machinetypes.get("vmware")


def test_a_new_type_is_one_file(tmp_path):
    (tmp_path / "lab-pdu.ini").write_text("[type]\ndescription = d\npower = pdu\n[required]\npdu_port = outlet\n")
    t = machinetypes.registry(tmp_path)["lab-pdu"]
    assert t.problems({"pdu_port": ""}) == ["pdu_port: outlet"]
    assert t.problems({"pdu_port": 0}) == []  # outlet 0 is an outlet
    (tmp_path / "bad.ini").write_text("[type]\ndescription = d\npower = no_such_module\n")
    with pytest.raises(machinetypes.MachineTypeError, match="bad.ini: .*power"):
        machinetypes.registry(tmp_path)


def test_settings_name_each_missing_key_of_the_type(tmp_path):
    (tmp_path / "m.key").write_text("a-long-enough-key-1234\n")
    (tmp_path / "m.key").chmod(0o600)
    text = BASE + '[[machine]]\nname = "m"\ntype = "pdudaemon"\nkey_file = "m.key"\npdu_daemon = "ftp://x"\n'
    with pytest.raises(SettingsError) as e:
        parse(text, str(tmp_path / "settings.toml"))
    msg = str(e.value)
    assert "('m').pdu_hostname: a pdudaemon machine needs" in msg and "('m').pdu_port" in msg
    assert "('m').pdu_daemon: 'ftp://x' is not an http:// or https:// URL" in msg
    with pytest.raises(SettingsError, match="type: expected one of \\['pdudaemon', 'qemu', 'remote'\\]"):
        parse(BASE + '[[machine]]\nname = "m"\ntype = "vmware"\n', str(tmp_path / "settings.toml"))
    # settings written before types were data still mean the same: no type = remote
    with pytest.raises(SettingsError, match="power_cycle: a remote machine needs a power-cycle command"):
        parse(BASE + '[[machine]]\nname = "m"\nkey_file = "m.key"\n', str(tmp_path / "settings.toml"))


@pytest.fixture
def pdudaemon(tmp_path):
    """A real pdudaemon on 127.0.0.1 whose PDU "lab" writes "<port> on|off" lines to a file."""
    if not Path(PDUDAEMON).exists():
        pytest.fail("pdudaemon is not installed: run scripts/install-deps (Debian package pdudaemon)")
    record = tmp_path / "pdu.log"
    port = free_port()
    conf = {"daemon": {"hostname": "127.0.0.1", "port": port, "logging_level": "DEBUG", "listener": "http"},
            "pdus": {"lab": {"driver": "localcmdline", "cmd_on": f"echo '%s on' >> {record}",
                             "cmd_off": f"echo '%s off' >> {record}"}}}
    (tmp_path / "pdudaemon.conf").write_text(json.dumps(conf))
    log = open(tmp_path / "pdudaemon.out", "wb")
    proc = subprocess.Popen([PDUDAEMON, f"--conf={tmp_path / 'pdudaemon.conf'}", "--logfile=-"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=2)
        except urllib.error.HTTPError:
            break  # it answers (404 for /)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"pdudaemon did not start: {(tmp_path / 'pdudaemon.out').read_text()[-2000:]}")
            time.sleep(0.2)
    yield url, record
    proc.terminate()
    proc.wait(10)
    log.close()


def _lines(path: Path, n: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().split() if path.exists() else []
        if len(lines) >= 2 * n:
            return path.read_text().splitlines()
        time.sleep(0.2)
    raise AssertionError(f"the PDU did not switch: {path.read_text() if path.exists() else 'nothing'}")


def test_pdudaemon_machine_is_power_cycled_through_a_real_pdudaemon(tmp_path, pdudaemon):
    url, record = pdudaemon
    (tmp_path / "b.key").write_text("a-long-enough-key-1234\n")
    (tmp_path / "b.key").chmod(0o600)
    text = BASE + f"""
[[machine]]
name = "board"
type = "pdudaemon"
key_file = "b.key"
pdu_daemon = "{url}"
pdu_hostname = "lab"
pdu_port = 7
pdu_delay = 0
"""
    s = parse(text, str(tmp_path / "settings.toml"))
    farm = make_farm(s, tmp_path / "state.json", tmp_path / "work")
    power = farm.driver("board").power
    assert isinstance(power, PduPower)
    ReactorThread.call(power.power_cycle)
    assert _lines(record, 1) == ["7 off", "7 on"]
    ReactorThread.call(power.soft_reboot)  # no soft_reboot command: the PDU again
    assert _lines(record, 2)[2:] == ["7 off", "7 on"]


def test_pdudaemon_refusal_and_absence_are_power_errors(pdudaemon):
    url, _ = pdudaemon
    with pytest.raises(PowerError, match="pdudaemon refused reboot of nosuchpdu port 1 .*HTTP 500"):
        PduDaemon(url).command("reboot", "nosuchpdu", "1", 0)
    with pytest.raises(PowerError, match="cannot reach pdudaemon at http://127.0.0.1:"):
        PduDaemon(f"http://127.0.0.1:{free_port()}", timeout=5).command("on", "lab", "1")
    with pytest.raises(ValueError, match="expected one of on, off, reboot"):
        PduDaemon(url).request_url("explode", "lab", "1")
