"""Settings validation: every bad case names the file, the key and what is expected."""

import json
from pathlib import Path

import pytest

from buildbot_kernel import settings
from buildbot_kernel.resources import shipped

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
    s = settings.load(shipped("settings.toml"))
    assert s.repositories[0].branches == ("drm-intel-fixes", "drm-intel-next", "drm-tip")
    assert "freedesktop.org/drm/i915" in s.repositories[0].url
    assert s.build("x86_64").config == "defconfig"


def test_defaults_filled_in():
    s = settings.parse(GOOD)
    assert s.repositories[0].poll_interval == 300
    assert s.build("x86_64").packages == ("tar",)
    assert s.images.base_url == "http://localhost:8011"


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
    assert settings.parse(text, str(tmp_path / "s.toml")).build("x86_64").fragments == ("missing.config",)


def test_missing_required_key_and_all_problems_at_once():
    msg = problems(GOOD.replace('url = "https://example.org/i915.git"\n', "").replace("web_port = 8010",
                                                                                    "web_port = 0"))
    assert ".url: missing; expected a git URL or path" in msg
    assert "web_port" in msg


def test_not_toml():
    assert "not valid TOML" in problems("[server\n")


def test_deb_packages_accepted():
    s = settings.parse(GOOD.replace('name = "x86_64"\n[[worker]]',
                                    'name = "x86_64"\npackages = ["tar", "deb"]\n[[worker]]'))
    assert s.builds[0].packages == ("tar", "deb")


def test_unknown_package_format_names_the_registry():
    msg = problems(GOOD.replace('name = "x86_64"\n[[worker]]', 'name = "x86_64"\npackages = ["rpm"]\n[[worker]]'))
    assert "packages" in msg and "'deb'" in msg and "'tar'" in msg


def test_deb_for_an_arch_debian_cannot_name_is_refused():
    msg = problems(GOOD.replace('name = "x86_64"\n[[worker]]',
                                'name = "x86_64"\narch = "sparc"\npackages = ["deb"]\n[[worker]]'))
    assert "'sparc'" in msg and "deb.ini" in msg


def test_same_port_twice():
    assert "must differ" in problems(GOOD.replace("web_port = 8010", "web_port = 8011"))


def test_locate_prefers_environment(tmp_path):
    assert settings.locate(tmp_path, {}) == str(tmp_path / "settings.toml")
    assert settings.locate(tmp_path, {settings.ENV_VAR: "/etc/bbk.toml"}) == "/etc/bbk.toml"


# --- hostile or mistaken values: each names the key and the fix, never a traceback ---------------------

def test_non_utf8_file_is_a_clear_error(tmp_path):
    p = tmp_path / "s.toml"
    p.write_bytes(GOOD.encode().replace(b'name = "w"', b'name = "w\xe9"'))
    with pytest.raises(settings.SettingsError) as e:
        settings.load(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: not UTF-8 text: byte 0xe9 on line 14") and "save the file as UTF-8" in msg


def test_deeply_nested_toml_is_a_clear_error():
    msg = problems(GOOD + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in msg and "at most two levels" in msg


def test_images_root_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    msg = problems(GOOD.replace('root = "images"', 'root = "afile"'), str(tmp_path / "s.toml"))
    assert f"[images].root: '{tmp_path / 'afile'}' is not a directory" in msg and "move the file away" in msg
    msg = problems(GOOD.replace('root = "images"', 'root = "afile/sub"'), str(tmp_path / "s.toml"))
    assert f"({tmp_path / 'afile'} is a file)" in msg


@pytest.mark.parametrize("root", ["", ".", ".."])
def test_images_root_must_not_be_the_master_directory(tmp_path, root):
    msg = problems(GOOD.replace('root = "images"', f'root = "{root}"'), str(tmp_path / "s.toml"))
    assert f"[images].root: {root!r} is the master's directory or the settings file's, or above one of them" in msg
    assert "name a directory of its own" in msg


@pytest.mark.parametrize("branch, words", [
    ("..", "holds '..'"),
    (".x", "the component '.x' starts with '.'"),
    ("with space", "holds ' '"),
    ("a:b", "holds ':'"),
    ("x.lock", "ends with '.lock'"),
    ("/abs", "starts or ends with '/'"),
    ("-n", "starts with '-'"),
    ("a\tb", "holds '\\t'"),
])
def test_branch_names_git_refuses(branch, words):
    listed = f'branches = ["drm-intel-fixes", {json.dumps(branch)}]'
    msg = problems(GOOD.replace('branches = ["drm-intel-fixes"]', listed))
    assert "[[repository]] #1 ('drm-intel').branches" not in msg  # reported by name, not by position
    assert "[[repository]] ('drm-intel').branches: branch" in msg and words in msg
    assert "as `git branch -r` shows it" in msg


def test_the_git_rules_accept_real_branch_names():
    from buildbot_kernel.naming import branch_problem

    for ok in ("drm-tip", "topic/drm-xe-next", "for-linus-6.8", "v6.8.y", "a+b", "x_y"):
        assert branch_problem(ok) == "", ok


@pytest.mark.parametrize("a, b, kind", [("a/b", "a-b", "image directory"), ("a/b", "a_b", "Buildbot name")])
def test_branches_that_collide_after_mapping(a, b, kind):
    msg = problems(GOOD.replace('branches = ["drm-intel-fixes"]', f'branches = ["{a}", "{b}"]'))
    assert f"[[repository]] ('drm-intel').branches: '{a}' and '{b}' both become the {kind}" in msg
    assert "watch only one of them" in msg


@pytest.mark.parametrize("url", ["ftp://x/", "file:///etc/", "javascript:alert(1)", "localhost:8011", "http://"])
def test_base_url_and_server_url_must_be_http(url):
    msg = problems(GOOD.replace('root = "images"', f'root = "images"\nbase_url = "{url}"'))
    assert f"[images].base_url: {url!r}" in msg and "write the http(s) URL the image tree is served at" in msg
    machine = f'[[machine]]\nname = "m"\ntype = "qemu"\nserver_url = "{url}"\n'
    msg = problems(GOOD + machine)
    assert f"[[machine]] ('m').server_url: {url!r}" in msg and "the machine reaches the image server" in msg


@pytest.mark.parametrize("bind", ["localhost", "0.0.0.0; rm -rf /", "1.2.3", ""])
def test_bind_must_be_an_ip_address(bind):
    msg = problems(GOOD.replace("web_port = 8010", f'web_port = 8010\nbind = "{bind}"'))
    assert f"[server].bind: {bind!r} is not an IP address" in msg and '"0.0.0.0" (every interface)' in msg


def test_is_ip_address():
    assert settings.is_ip_address("0.0.0.0") and settings.is_ip_address("10.1.2.3")
    assert settings.is_ip_address("::1") and settings.is_ip_address("fe80::1")
    assert not settings.is_ip_address("example.org") and not settings.is_ip_address(None)


@pytest.mark.parametrize("url", ["not a url", "://x", "state.sqlite"])
def test_db_url_sqlalchemy_cannot_parse(url):
    msg = problems(GOOD.replace("web_port = 8010", f'web_port = 8010\ndb_url = "{url}"'))
    assert f"[server].db_url: {url!r} is not an SQLAlchemy database URL" in msg and "sqlite:///state.sqlite" in msg


def test_missing_fragment_and_config_files_name_the_key(tmp_path):
    text = GOOD.replace('name = "x86_64"\n[[worker]]',
                        'name = "x86_64"\nconfig = "configs/full.config"\nfragments = ["nope.config"]\n[[worker]]')
    msg = problems(text, str(tmp_path / "s.toml"))
    assert "[[build]] ('x86_64').fragments: config file 'nope.config' is not a readable file " \
           f"(looked at {tmp_path / 'nope.config'}); give a path relative to the settings file's directory" in msg
    assert "[[build]] ('x86_64').config: config file 'configs/full.config'" in msg


def test_repository_web_url_is_an_http_template_with_sha():
    ok = settings.parse(GOOD.replace('build = "x86_64"\n', 'build = "x86_64"\nweb_url = '
                                     '"https://gitlab.example.org/linux/-/commit/{sha}"\n', 1))
    assert ok.repositories[0].web_url.endswith("/commit/{sha}")
    assert settings.parse(GOOD).repositories[0].web_url == ""
    for bad in ("https://gitlab.example.org/linux/-/commit/", "javascript:alert('{sha}')", "ftp://x/{sha}"):
        text = problems(GOOD.replace('build = "x86_64"\n', f'build = "x86_64"\nweb_url = "{bad}"\n', 1))
        assert "[[repository]] #1 ('drm-intel').web_url: expected an http(s) commit URL template holding {sha}" in text
