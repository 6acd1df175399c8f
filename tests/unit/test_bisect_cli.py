"""``buildbot-kernel bisect`` end to end: a generated repository, an image tree served over real HTTP, a
real test command; every bad input refused with its option named and nothing left behind."""

from __future__ import annotations

import pytest

from buildbot_kernel import cli
from tests.bisect.history import linear, make_history
from tests.bisect.imagetree import BUILD, serve_dir, write_image_tree

N, CULPRIT = 40, 23


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("hist") / "repo", linear(N))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    with serve_dir(root) as base:
        yield root, base


@pytest.fixture(scope="module")
def index_all(h, server):
    root, base = server
    (root / "all").mkdir()
    return write_image_tree(root / "all", h, range(N), f"{base}/all")


@pytest.fixture(scope="module")
def index_sparse(h, server):
    root, base = server
    (root / "sparse").mkdir()
    return write_image_tree(root / "sparse", h, list(range(0, N, 5)) + [N - 1], f"{base}/sparse")


def make_tester(h, tmp_path, culprit=CULPRIT, abort_at=None):
    """A test command that checks the contract environment, records what it tested, and knows the culprit."""
    tested = tmp_path / "tested"
    script = tmp_path / "test.sh"
    abort = f'[ "$BISECT_SHA" = "{h.shas[abort_at]}" ] && exit 200\n' if abort_at is not None else ""
    script.write_text(
        "#!/bin/sh\n"
        'grep -q "of $BISECT_SHA" "$BISECT_IMAGE_DIR/vmlinuz" || exit 201\n'  # downloaded, right image
        # over HTTP from the server, or file:// when the index is read from the tree itself
        'case "$BISECT_IMAGE_URL" in http://*/|file:///*/) ;; *) exit 202 ;; esac\n'
        'case "$BISECT_IMAGE" in *_"$(echo $BISECT_SHA | cut -c1-6)"_*) ;; *) exit 203 ;; esac\n'
        f"{abort}"
        f'echo "$BISECT_SHA" >> {tested}\n'
        f'git -C {h.path} merge-base --is-ancestor {h.shas[culprit]} "$BISECT_SHA" && exit 1\n'
        "exit 0\n")
    return f"sh {script}", tested


def bisect(monkeypatch, capsys, *argv):
    # only this command: the test must not depend on the other sub-commands' modules
    monkeypatch.setattr(cli, "COMMANDS", ["buildbot_kernel.commands.bisect"])
    code = cli.main(["bisect", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_finds_the_first_bad_commit_with_images_on_every_commit(h, index_all, server, tmp_path, monkeypatch,
                                                                capsys):
    cmd, tested = make_tester(h, tmp_path)
    log = tmp_path / "bisect.log"
    root, base = server
    code, out, err = bisect(monkeypatch, capsys, "--repo", h.path, "--good", h.shas[0], "--bad", "main",
                            "--index", f"{base}/all/index.json", "--build", BUILD, "--run", cmd, "--log", log)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1] == f"first bad commit: {h.shas[CULPRIT]}"
    assert "step 1 of ~6:" in out and "39 commits left in range" in out
    assert len(tested.read_text().split()) == 6  # log2(39) rounded up
    assert f"# first bad commit: [{h.shas[CULPRIT]}] c{CULPRIT}" in log.read_text()


def test_sparse_images_end_with_the_smallest_proven_range(h, index_sparse, tmp_path, monkeypatch, capsys):
    cmd, tested = make_tester(h, tmp_path)
    code, out, err = bisect(monkeypatch, capsys, "--repo", h.path, "--good", h.shas[0], "--bad",
                            h.shas[N - 1], "--index", index_sparse.as_uri(), "--build", BUILD, "--run", cmd)
    assert code == 0, err
    # images at 20 (good) and 25 (bad): the culprit is one of 21..25, nothing without an image was tested
    assert out.splitlines()[-1] == "first bad commit is one of: " + " ".join(h.shas[21:26])
    assert {h.index(s) % 5 for s in tested.read_text().split()} == {0}
    assert "building is off" in out


def test_abort_keeps_the_log_and_replay_resumes_without_repeating(h, index_all, tmp_path, monkeypatch,
                                                                  capsys):
    log = tmp_path / "bisect.log"
    cmd, tested = make_tester(h, tmp_path, abort_at=29)  # the second midpoint of 0..39 with culprit 23 is 29
    code, out, err = bisect(monkeypatch, capsys, "--good", h.shas[0], "--bad", h.shas[N - 1], "--repo",
                            h.path, "--index", index_all, "--build", BUILD, "--run", cmd, "--log", log)
    assert code != 0 and "above 127" in err and "--replay" in err
    before = tested.read_text().split()
    assert len(before) == 1 and log.read_text().count("git bisect good") == 1

    cmd, tested = make_tester(h, tmp_path)
    code, out, err = bisect(monkeypatch, capsys, "--replay", log, "--repo", h.path, "--index", index_all,
                            "--build", BUILD, "--run", cmd)
    assert code == 0, err
    assert out.splitlines()[-1] == f"first bad commit: {h.shas[CULPRIT]}"
    after = tested.read_text().split()[1:]  # the file also holds the first run's line
    assert not set(before) & set(after) and len(before) + len(after) == 6
    assert "step 2 of" in out  # numbering continues


@pytest.mark.parametrize("args, option, words", [
    (["--good", "no-such-rev", "--bad", "main"], "--good", "names no commit"),
    (["--good", "tip-39~39", "--bad", "no-such-rev"], "--bad", "names no commit"),
    (["--good", "main", "--bad", "main"], "--good", "is the bad commit"),
    (["--good", "tip-39~2", "--bad", "tip-39~9"], "--good", "not an ancestor"),
    (["--bad", "main"], "--good", "required"),
    (["--good", "tip-39~39"], "--bad", "required"),
    (["--good", "tip-39~39", "--bad", "main", "--build", "arm64"], "--build", "has: x86_64"),
    (["--good", "tip-39~39", "--bad", "main", "--index", "{tmp}/none.json"], "--index", "cannot read"),
    (["--good", "tip-39~39", "--bad", "main", "--repo", "{tmp}"], "--repo", "not a git repository"),
    (["--good", "tip-39~39", "--bad", "main", "--log", "{tmp}/exists.log"], "--log", "already exists"),
    (["--good", "tip-39~39", "--bad", "main", "--replay", "{tmp}/exists.log"], "--replay", "leave out"),
    (["--replay", "{tmp}/none.log"], "--replay", "cannot read"),
    (["--good", "tip-39~39", "--bad", "main", "--max-steps", "0"], "--max-steps", "positive"),
])
def test_bad_input_names_the_option_and_leaves_nothing(h, index_all, tmp_path, monkeypatch, capsys,
                                                       args, option, words):
    (tmp_path / "exists.log").write_text("x\n")
    cmd, tested = make_tester(h, tmp_path)
    defaults = {"--repo": h.path, "--index": index_all, "--build": BUILD, "--run": cmd}
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    for opt, value in defaults.items():
        if opt not in args:
            args += [opt, value]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = bisect(monkeypatch, capsys, *args)
    assert code == 2
    assert err.startswith(f"buildbot-kernel bisect: error: {option}: ") and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no log, nothing tested
    assert (tmp_path / "exists.log").read_text() == "x\n"
