"""Image lookup in index.json (from a path and over real HTTP), verified downloads, and the
local-command tester's contract (exit status -> verdict, environment)."""

from __future__ import annotations

import json
import time

import pytest

from buildbot_kernel.bisect import tester
from buildbot_kernel.bisect.images import ImageError, ImageIndex, fetch_image
from buildbot_kernel.bisect.tester import run_test_command, verdict_for_exit
from tests.bisect.history import linear, make_history
from tests.bisect.imagetree import BUILD, serve_dir, write_image_tree


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("hist") / "repo", linear(12))


@pytest.fixture
def served(h, tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    with serve_dir(root) as base:
        index = write_image_tree(root, h, range(0, 12, 3), base)
        yield root, base, index


def test_lookup_by_sha_and_build_from_a_path_and_over_http(h, served):
    root, base, index_path = served
    # read from the tree itself, the files come from the tree (each entry's path), not from the server
    for source, where in ((index_path, root.as_uri() + "/"), (f"{base}/index.json", base)):
        index = ImageIndex.load(source)
        assert index.builds() == [BUILD] and index.skipped == []
        image = index.lookup(h.shas[3], BUILD)
        assert image.sha == h.shas[3] and image.url.startswith(where) and image.url.endswith("/")
        assert image.entry["repository_url"] == image.metadata["url"] == str(h.path)
        assert index.lookup(h.shas[4], BUILD) is None  # no image for that commit
        assert index.lookup(h.shas[3], "arm64") is None  # nor for another build config
        assert index.has_image_for(BUILD)(h.shas[6]).name == index.lookup(h.shas[6], BUILD).name


def test_fetch_downloads_and_verifies(h, served, tmp_path):
    _, base, _ = served
    image = ImageIndex.load(f"{base}/index.json").lookup(h.shas[9], BUILD)
    d = fetch_image(image, tmp_path / "dl")
    assert (d / "vmlinuz").read_text() == f"kernel image of {h.shas[9]}\n"
    assert sorted(p.name for p in d.iterdir()) == ["config", "vmlinuz"]


def test_fetch_refuses_a_corrupt_file_and_keeps_nothing_of_it(h, served, tmp_path):
    root, base, _ = served
    image = ImageIndex.load(f"{base}/index.json").lookup(h.shas[9], BUILD)
    (root / "main" / image.name / "vmlinuz").write_text(f"kernel image of {h.shas[8]}\n")  # same size
    with pytest.raises(ImageError, match="sha256"):
        fetch_image(image, tmp_path / "dl")
    assert not (tmp_path / "dl" / "vmlinuz").exists()
    assert [p.name for p in (tmp_path / "dl").iterdir() if p.name.startswith(".")] == []


def test_fetch_reports_a_missing_file(h, served, tmp_path):
    root, base, _ = served
    image = ImageIndex.load(f"{base}/index.json").lookup(h.shas[0], BUILD)
    (root / "main" / image.name / "config").unlink()
    with pytest.raises(ImageError, match="config"):
        fetch_image(image, tmp_path / "dl")


@pytest.mark.parametrize("doc, words", [
    ({"schema": 2, "images": []}, "schema"),
    ({"schema": 1}, "images"),
])
def test_index_contract_errors_say_where(tmp_path, doc, words):
    p = tmp_path / "index.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ImageError, match=words):
        ImageIndex.load(p)


@pytest.mark.parametrize("entry, words", [
    ({"name": "x"}, "images[0] ('x'): has no 'sha'"),
    ({"name": "x", "sha": "a" * 40, "build": "b", "url": "u/", "files": {"f": 1}}, "files['f'] must be"),
])
def test_a_bad_entry_is_left_out_with_where_and_why(tmp_path, entry, words):
    p = tmp_path / "index.json"
    p.write_text(json.dumps({"schema": 1, "images": [entry]}))
    index = ImageIndex.load(p)
    assert index.images == [] and len(index.skipped) == 1 and words in index.skipped[0]


def test_unreadable_index(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        ImageIndex.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ImageError, match="not JSON"):
        ImageIndex.load(tmp_path / "bad.json")


@pytest.mark.parametrize("status, verdict", [(0, "good"), (1, "bad"), (2, "bad"), (124, "bad"), (125, "skip"),
                                             (126, "bad"), (127, "bad")])
def test_exit_status_to_verdict(status, verdict):
    assert verdict_for_exit(status) == verdict


@pytest.mark.parametrize("status", [128, 129, 255, -9])
def test_exit_status_above_127_aborts(status):
    with pytest.raises(tester.TesterAbort) as e:
        verdict_for_exit(status)
    assert e.value.status == (status if status > 0 else 137)


def test_the_command_sees_the_contract_environment(tmp_path):
    env = tester.tester_env("a" * 40, "6.1.0-main_aaaaaa_20231114_+", "http://x/main/img/", tmp_path,
                            base={"PATH": "/usr/bin:/bin"})
    out = tmp_path / "seen"
    status = run_test_command(
        f'echo "$BISECT_SHA $BISECT_IMAGE $BISECT_IMAGE_URL $BISECT_IMAGE_DIR" > {out}; exit 125', env)
    assert status == 125
    assert out.read_text().split() == ["a" * 40, "6.1.0-main_aaaaaa_20231114_+", "http://x/main/img/",
                                       str(tmp_path)]


def test_a_hung_command_is_killed_with_its_group_and_is_skip(tmp_path):
    pidfile = tmp_path / "pid"
    began = time.monotonic()
    with pytest.raises(tester.TestTimedOut) as e:
        run_test_command(f"sleep 30 & echo $! > {pidfile}; wait", {"PATH": "/usr/bin:/bin"}, timeout=0.5)
    assert time.monotonic() - began < 10  # the whole group died, not just the shell
    assert e.value.verdict == "skip" and "killed with its process group" in str(e.value)
    assert not _alive(int(pidfile.read_text()))


def test_what_a_finished_command_left_running_in_its_group_is_killed(tmp_path):
    pidfile = tmp_path / "pid"
    assert run_test_command(f"sleep 1000 & echo $! > {pidfile}; exit 0", {"PATH": "/usr/bin:/bin"}) == 0
    assert not _alive(int(pidfile.read_text()))


def _alive(pid: int) -> bool:
    """A zombie (killed, waiting for init to reap it) does not count."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True
