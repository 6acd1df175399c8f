"""Settings a hostile review found accepted though they could not work, or meant two things.

Each case is parsed as the master parses its settings file; each names the key in its error.
"""

from __future__ import annotations

import pytest

from buildbot_kernel import settings
from buildbot_kernel.resources import shipped

SHIPPED = shipped("settings.toml").read_text()


def _refused(text: str, tmp_path) -> str:
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(text, str(tmp_path / "settings.toml"))
    return str(e.value)


def _with(section: str, line: str) -> str:
    assert f"[{section}]\n" in SHIPPED
    return SHIPPED.replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)


@pytest.mark.parametrize("value", ["inf", "1e300", "3601", "-1", "nan"])
def test_a_debounce_no_timer_can_wait_is_refused(tmp_path, value):
    """The hole: ``debounce = inf`` (or 1e300) passed the check ``>= 0``; the index watcher's timer then
    raised OverflowError in its thread, which died without a word: no new image reached index.json until
    a restart."""
    msg = _refused(_with("images", f"debounce = {value}"), tmp_path)
    assert f"[images].debounce: expected seconds from 0 to {settings.MAX_DEBOUNCE}" in msg, msg


@pytest.mark.parametrize("section, key, value", [
    ("images", "debounce", "1.0e10"),
    ("server", "master_timeout", "10000000000"),
])
def test_durations_past_a_week_are_refused(tmp_path, section, key, value):
    msg = _refused(_with(section, f"{key} = {value}"), tmp_path)
    assert f"[{section}].{key}: expected" in msg, msg


def test_a_repository_poll_past_a_week_is_refused(tmp_path):
    text = SHIPPED.replace("poll_interval = ", "poll_interval = 1000000000000 #", 1)
    assert text != SHIPPED
    msg = _refused(text, tmp_path)
    assert "poll_interval: expected a whole number of seconds from 1 to 604800" in msg, msg


@pytest.mark.parametrize("table, says", [
    ('name = "local"', "('local').name: 'local' is the tester name of the build workers"),
    ('name = "m1"\nclass = "local"', "('m1').class: 'local' is the tester name of the build workers"),
])
def test_local_is_never_a_machine_or_a_class(tmp_path, table, says):
    """The hole: a machine named "local", or a class "local", was accepted; a bisect on tester "local"
    then ran on the build workers (that machine was never used, its failing test recorded as a bad
    verdict) or on the class's machines, while a [[test]] with tester "local" ran on the build workers."""
    msg = _refused(SHIPPED + f"\n[[machine]]\n{table}\ntype = \"qemu\"\n", tmp_path)
    assert says in msg, msg


def test_a_class_is_spelled_like_a_machine_name(tmp_path):
    msg = _refused(SHIPPED + '\n[[machine]]\nname = "m1"\nclass = "a\\u0007b c/../../x"\ntype = "qemu"\n', tmp_path)
    assert "[[machine]] #1 ('m1').class: expected a hardware class name" in msg, msg
    ok = settings.parse(SHIPPED + '\n[[machine]]\nname = "m1"\nclass = "skl"\ntype = "qemu"\n',
                        str(tmp_path / "settings.toml"))
    assert ok.machines[0].class_ == "skl"


def test_a_pdu_daemon_url_holds_no_password(tmp_path):
    """The hole: ``pdu_daemon = "http://admin:hunter2@..."`` was accepted, and a power error repeated the
    URL, password and all, into the attempt's reason, the log and the machine's page."""
    text = SHIPPED + ('\n[[machine]]\nname = "m1"\ntype = "pdudaemon"\npdu_daemon = "http://admin:hunter2@10.0.0.9:16421"'
                      '\npdu_hostname = "pdu1"\npdu_port = 3\n')
    msg = _refused(text, tmp_path)
    assert "('m1').pdu_daemon: 'http://***@10.0.0.9:16421' holds a credential" in msg, msg
    assert "hunter2" not in msg


def test_a_failed_worker_creation_does_not_print_the_worker_password(tmp_path):
    """The hole: ``buildbot-kernel run`` said which command failed, argv and all, and create-worker's
    argv holds the local worker's password (a secret settings key: no log line may show it)."""
    from buildbot_kernel.cli import CommandError
    from buildbot_kernel.commands import run

    (tmp_path / "file").write_text("")  # a worker directory under a file: create-worker fails
    with pytest.raises(CommandError) as e:
        run._call(run._tool("buildbot-worker"), "create-worker", "-q", tmp_path / "file" / "sub",
                  "127.0.0.1:9989", "local", "S3cret-worker-pw", secret="S3cret-worker-pw")
    assert "create-worker" in str(e.value) and "***" in str(e.value)
    assert "S3cret-worker-pw" not in str(e.value)
