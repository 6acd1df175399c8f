"""Behind a reverse proxy every browser reaches the web UI from the proxy's address, so the per-address
cap the web UI keeps (README "Putting it on a lab network") would be the whole lab's: ``[server]
web_per_address`` sets it, 0 for none; the total still holds."""

from __future__ import annotations

import pytest

from buildbot_kernel import settings
from buildbot_kernel.connlimits import ConnectionCaps
from buildbot_kernel.master.listeners import WEB_PER_ADDRESS, ListenerGuard
from buildbot_kernel.resources import shipped

SHIPPED = shipped("settings.toml").read_text()


def _guard_kwargs(tmp_path, line: str = "") -> dict:
    from buildbot_kernel.master.config import make_config

    path = tmp_path / "settings.toml"
    path.write_text(SHIPPED.replace("[server]\n", f"[server]\n{line}\n", 1))
    [guard] = [s for s in make_config(str(tmp_path / "master"), str(path))["services"] if isinstance(s, ListenerGuard)]
    return guard._config_kwargs


def test_the_master_takes_the_cap_from_the_settings(tmp_path):
    assert _guard_kwargs(tmp_path)["web_per_address"] == WEB_PER_ADDRESS
    assert _guard_kwargs(tmp_path, "web_per_address = 0")["web_per_address"] == 0


@pytest.mark.parametrize("value", ["-1", "257", "true"])
def test_a_cap_out_of_range_is_refused_naming_the_key(tmp_path, value):
    with pytest.raises(settings.SettingsError, match=r"\[server\]\.web_per_address: expected open web UI"):
        settings.parse(SHIPPED.replace("[server]\n", f"[server]\nweb_per_address = {value}\n", 1),
                       str(tmp_path / "settings.toml"))


def test_no_per_address_cap_leaves_the_total():
    caps = ConnectionCaps("web UI", 0, 5, lambda: 0.0)
    assert [caps.admit("10.0.0.1") for _ in range(6)] == [True] * 5 + [False]
    caps.released("10.0.0.1")
    assert caps.admit("10.0.0.2")


def test_a_per_address_cap_refuses_the_next_from_that_address_only():
    caps = ConnectionCaps("web UI", 2, 5, lambda: 0.0)
    assert [caps.admit("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert caps.admit("10.0.0.2")
