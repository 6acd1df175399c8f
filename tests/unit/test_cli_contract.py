"""The command line's promises: --index takes the base URL or the index URL, images by branch and latest,
one --version, `stop` finds the master from anywhere (or says it found none), plain-text help."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
from pathlib import Path

import pytest

from buildbot_kernel.cli import build_parser, main, plain
from buildbot_kernel.commands import run
from buildbot_kernel.imagetree.indexfile import index_location
from buildbot_kernel.imagetree.lookup import latest, select


@pytest.mark.parametrize("given", ["http://host:8011", "http://host:8011/", "http://host:8011/index.json"])
def test_index_takes_the_base_url_or_the_index_url(given):
    assert index_location(given) == "http://host:8011/index.json"


@pytest.mark.parametrize("given, wanted", [
    ("https://h/kernels", "https://h/kernels/index.json"),
    ("https://h/kernels/", "https://h/kernels/index.json"),
    ("https://h/kernels/drm-tip/index.json", "https://h/kernels/drm-tip/index.json"),
    ("http://h:8011/?x=1", "http://h:8011/index.json?x=1"),
])
def test_index_url_under_a_path(given, wanted):
    assert index_location(given) == wanted


def test_index_path_directory_means_its_index(tmp_path):
    assert index_location(str(tmp_path)) == str(tmp_path / "index.json")
    assert index_location(str(tmp_path / "x.json")) == str(tmp_path / "x.json")


def entry(name, branch="topic/x", build="x86_64", head=False, on_demand=False):
    return {"name": name, "branch": branch, "build": build, "head": head, "on_demand": on_demand,
            "path": f"{branch.replace('/', '-')}/{name}/", "url": f"http://h/{name}/"}


def test_latest_is_the_heads_image_per_build_config():
    entries = [entry("a-arm", build="arm64"), entry("head", head=True), entry("old"),
               entry("other", branch="main", head=True)]
    assert [e["name"] for e in latest(entries, "topic/x")] == ["a-arm", "head"]
    assert [e["name"] for e in latest(entries, "topic/x", "x86_64")] == ["head"]


def test_latest_without_a_head_image_skips_the_bisects_builds():
    entries = [entry("bisect-built", on_demand=True), entry("branch-built"), entry("older")]
    assert [e["name"] for e in latest(entries, "topic/x")] == ["branch-built"]
    assert latest([entry("bisect-built", on_demand=True)], "topic/x") == []
    # unless it is the head's own image
    assert [e["name"] for e in latest([entry("b", on_demand=True, head=True)], "topic/x")] == ["b"]


def test_select_by_git_name_or_directory_and_build():
    entries = [entry("a"), entry("b", branch="main"), entry("c", build="arm64"), "not an entry"]
    assert [e["name"] for e in select(entries, "topic/x")] == ["a", "c"]
    assert [e["name"] for e in select(entries, "topic-x", "arm64")] == ["c"]
    assert [e["name"] for e in select(entries)] == ["a", "b", "c"]


def test_version_is_the_distributions(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"buildbot-kernel {importlib.metadata.version('buildbot-kernel')}\n"


def _all_help(parser, path=()):
    yield " ".join(path), parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_help(sub, (*path, name))


def test_help_texts_are_plain_text():
    seen = 0
    for path, text in _all_help(build_parser()):
        seen += 1
        for markup in ("``", "`", ":class:", ":func:"):
            assert markup not in text, f"buildbot-kernel {path} --help shows {markup!r}"
    assert seen > 10  # every sub-command and action was looked at


def test_plain():
    assert plain("run ``git bisect run``, then `stop` (:func:`x.y`)") == "run git bisect run, then 'stop' (x.y)"


def _master(d):
    d.mkdir(parents=True)
    (d / "buildbot.tac").write_text("# a master directory\n")
    return d


def test_stop_finds_the_master_run_recorded_from_another_directory(tmp_path, monkeypatch):
    environ = {"XDG_STATE_HOME": str(tmp_path / "state")}
    master = _master(tmp_path / "lab" / "master")
    run.record_run(master, tmp_path / "lab" / "w", environ)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run.find_master(None, None, elsewhere, environ) == (master, tmp_path / "lab" / "w")
    # ./master wins over the record; --dir over both
    here = _master(elsewhere / "master")
    assert run.find_master(None, None, elsewhere, environ) == (here, elsewhere / "worker")
    assert run.find_master(str(master), None, elsewhere, environ)[0] == master


def test_stop_finds_nothing_when_the_recorded_master_is_gone(tmp_path):
    environ = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert run.find_master(None, None, tmp_path, environ) is None
    run.record_run(tmp_path / "removed", tmp_path / "w", environ)
    assert run.find_master(None, None, tmp_path, environ) is None
    (tmp_path / "state" / "buildbot-kernel" / run.LAST_RUN).write_text(json.dumps({"master": 5}))
    assert run.find_master(None, None, tmp_path, environ) is None


def test_stop_without_a_master_says_so_and_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    assert main(["stop"]) == 1
    assert "no master found" in capsys.readouterr().err


def test_stop_of_a_master_that_is_not_running_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    _master(tmp_path / "master")
    (tmp_path / "master" / "twistd.pid").write_text("999999999\n")  # stale: no such process
    assert main(["stop"]) == 1
    err = capsys.readouterr().err
    assert "nothing is running" in err and str(tmp_path / "master") in err


def test_paths_names_the_shipped_files_and_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BUILDBOT_KERNEL_CACHE", str(tmp_path / "c"))
    assert main(["paths", "scripts"]) == 0
    scripts = Path(capsys.readouterr().out.strip())
    assert (scripts / "build-stage1-ramfs").is_file() and (scripts / "stage1" / "init").is_file()
    main(["paths", "cache"])
    assert capsys.readouterr().out == f"{tmp_path / 'c'}\n"
    main(["paths"])
    listing = capsys.readouterr().out
    assert "settings.toml" in listing and "master.cfg" in listing and "templates" in listing


def test_cache_dir_defaults_to_the_users_cache(tmp_path):
    from buildbot_kernel.resources import cache_dir

    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "buildbot-kernel"
    assert cache_dir({"HOME": str(tmp_path)}).name == "buildbot-kernel"
    assert cache_dir({"BUILDBOT_KERNEL_CACHE": "/x", "XDG_CACHE_HOME": str(tmp_path)}) == Path("/x")
