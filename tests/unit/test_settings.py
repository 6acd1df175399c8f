"""Settings validation: every bad case names the file, the key and what is expected."""

from pathlib import Path

import pytest

from buildbot_kernel import settings

REPO = Path(__file__).resolve().parents[2]
GOOD = """
[server]
web_port = 8010
[images]
root = "images"
[[repository]]
name = "drm-intel"
url = "https://example.org/i915.git"
branches = ["drm-intel-fixes"]
build = "x86_64"
[[build]]
name = "x86_64"
[[worker]]
name = "w"
password = "p"
"""


def problems(text, path="s.toml"):
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(text, path)
    assert all(line.startswith(f"{path}: ") for line in str(e.value).splitlines())
    return str(e.value)


def test_shipped_settings_are_valid_and_watch_drm_intel():
    s = settings.load(REPO / "settings.toml")
    assert s.repositories[0]["branches"] == ["drm-intel-fixes", "drm-intel-next", "drm-tip"]
    assert "freedesktop.org/drm/i915" in s.repositories[0]["url"]
    assert s.build("x86_64")["config"] == "defconfig"


def test_defaults_filled_in():
    s = settings.parse(GOOD)
    assert s.repositories[0]["poll_interval"] == 300
    assert s.build("x86_64")["packages"] == ["tar"]
    assert s.images["base_url"] == "http://localhost:8011"


def test_unknown_key_is_an_error_naming_it():
    msg = problems(GOOD.replace("build = \"x86_64\"\n[[build]]", "build = \"x86_64\"\npoll_intervall = 5\n[[build]]"))
    assert "[[repository]] #1 ('drm-intel'): unknown key 'poll_intervall'" in msg


def test_wrong_type():
    assert "[server].web_port: expected a TCP port number 1-65535, got '8010'" in problems(
        GOOD.replace("web_port = 8010", 'web_port = "8010"'))


def test_bool_is_not_a_port():
    assert "web_port: expected a TCP port" in problems(GOOD.replace("web_port = 8010", "web_port = true"))


def test_port_out_of_range():
    assert "web_port: expected a TCP port number 1-65535, got 70000" in problems(
        GOOD.replace("web_port = 8010", "web_port = 70000"))


def test_empty_branch_list():
    assert ".branches: expected a non-empty list of branch names, got []" in problems(
        GOOD.replace('branches = ["drm-intel-fixes"]', "branches = []"))


def test_build_that_does_not_exist():
    assert "no [[build]] named 'arm64'" in problems(GOOD.replace('build = "x86_64"\n[[build]]',
                                                                 'build = "arm64"\n[[build]]'))


def test_duplicate_names():
    assert "[[worker]]: duplicate name 'w'" in problems(GOOD + '[[worker]]\nname = "w"\npassword = "q"\n')


def test_unreadable_fragment(tmp_path):
    text = GOOD.replace('name = "x86_64"\n[[worker]]', 'name = "x86_64"\nfragments = ["missing.config"]\n[[worker]]')
    msg = problems(text, str(tmp_path / "s.toml"))
    assert "config file 'missing.config' is not a readable file" in msg
    (tmp_path / "missing.config").write_text("CONFIG_DRM_I915=y\n")
    assert settings.parse(text, str(tmp_path / "s.toml")).build("x86_64")["fragments"] == ["missing.config"]


def test_missing_required_key_and_all_problems_at_once():
    msg = problems(GOOD.replace('url = "https://example.org/i915.git"\n', "").replace("web_port = 8010",
                                                                                    "web_port = 0"))
    assert ".url: missing; expected a git URL or path" in msg
    assert "web_port" in msg


def test_not_toml():
    assert "not valid TOML" in problems("[server\n")


def test_deb_packages_refused_with_the_reason():
    msg = problems(GOOD.replace('name = "x86_64"\n[[worker]]',
                                'name = "x86_64"\npackages = ["tar", "deb"]\n[[worker]]'))
    assert "Debian package names" in msg


def test_same_port_twice():
    assert "must differ" in problems(GOOD.replace("web_port = 8010", "web_port = 8011"))


def test_locate_prefers_environment(tmp_path):
    assert settings.locate(tmp_path, {}) == str(tmp_path / "settings.toml")
    assert settings.locate(tmp_path, {settings.ENV_VAR: "/etc/bbk.toml"}) == "/etc/bbk.toml"
