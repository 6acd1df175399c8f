"""The bisect log: git's format, replayable by real ``git bisect replay`` in a fresh clone, and enough to
resume a bisection without repeating a step."""

from __future__ import annotations

import pytest

from buildbot_kernel.bisect.engine import BisectInputError, Done, Test
from buildbot_kernel.bisect.log import parse_log, state_from_log
from buildbot_kernel.bisect.session import BisectSession
from tests.bisect.history import git, make_history, with_merges


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("hist") / "repo", with_merges(60, seed=3))


CULPRIT = 37


def _run(session, h, verdict, steps=None):
    """Test whatever the engine picks (every commit has an image) for ``steps`` steps or to the end."""
    tested = []
    while steps is None or len(tested) < steps:
        step = session.next_step(lambda sha: sha)
        if not isinstance(step, Test):
            return step, tested
        tested.append(step.sha)
        session.record(step.sha, verdict(step.sha))
    return session.next_step(lambda sha: sha), tested


def _clone_and_replay(h, log, tmp_path):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(h.path), str(clone))
    out = git(clone, "bisect", "replay", str(log))
    refs = dict(line.split()[::-1] for line in git(clone, "for-each-ref", "--format=%(objectname) %(refname)",
                                                   "refs/bisect/").stdout.splitlines())
    head = git(clone, "rev-parse", "HEAD").stdout.strip()
    return out.stdout, refs, head


def _expected_refs(state):
    refs = {"refs/bisect/bad": state.bad}
    refs.update({f"refs/bisect/good-{g}": g for g in state.goods})
    refs.update({f"refs/bisect/skip-{s}": s for s in state.skipped})
    return refs


def test_log_is_gits_format(h, tmp_path):
    log = tmp_path / "bisect.log"
    session = BisectSession.start(h.path, [h.shas[0], h.shas[5]], h.shas[-1], log)
    step = session.next_step(lambda sha: sha)
    session.record(step.sha, "skip")
    lines = log.read_text().splitlines()
    assert lines[0] == f"# bad: [{h.shas[-1]}] c59"
    assert lines[1:3] == [f"# good: [{h.shas[0]}] c0", f"# good: [{h.shas[5]}] c5"]
    assert lines[3] == f"git bisect start '{h.shas[-1]}' '{h.shas[0]}' '{h.shas[5]}'"
    assert lines[4:] == [f"# skip: [{step.sha}] c{h.index(step.sha)}", f"git bisect skip {step.sha}"]


def test_replay_midway_lands_on_the_same_state_and_next_commit(h, tmp_path):
    log = tmp_path / "bisect.log"
    session = BisectSession.start(h.path, [h.shas[0]], h.shas[-1], log)
    nxt, tested = _run(session, h, h.oracle(CULPRIT), steps=3)
    assert isinstance(nxt, Test)
    _, refs, head = _clone_and_replay(h, log, tmp_path)
    assert refs == _expected_refs(session.state)
    assert head == nxt.sha  # git checks out the commit we would test next


def test_replay_with_skips_gives_the_same_refs(h, tmp_path):
    log = tmp_path / "bisect.log"
    session = BisectSession.start(h.path, [h.shas[0]], h.shas[-1], log)
    oracle = h.oracle(CULPRIT)
    first = session.next_step(lambda sha: sha).sha
    _run(session, h, lambda sha: "skip" if sha == first else oracle(sha), steps=3)
    _, refs, _ = _clone_and_replay(h, log, tmp_path)
    assert refs == _expected_refs(session.state)
    assert f"refs/bisect/skip-{first}" in refs


def test_replay_of_a_finished_log_names_the_same_first_bad_commit(h, tmp_path):
    log = tmp_path / "bisect.log"
    session = BisectSession.start(h.path, [h.shas[0]], h.shas[-1], log)
    end, _ = _run(session, h, h.oracle(CULPRIT))
    assert end == Done(h.shas[CULPRIT])
    assert log.read_text().endswith(f"# first bad commit: [{h.shas[CULPRIT]}] c{CULPRIT}\n")
    out, refs, _ = _clone_and_replay(h, log, tmp_path)
    assert f"{h.shas[CULPRIT]} is the first bad commit" in out
    assert refs["refs/bisect/bad"] == h.shas[CULPRIT]


def test_resume_repeats_no_step(h, tmp_path):
    log = tmp_path / "bisect.log"
    oracle = h.oracle(CULPRIT)
    straight_session = BisectSession.start(h.path, [h.shas[0]], h.shas[-1], tmp_path / "straight.log")
    _, straight = _run(straight_session, h, oracle)

    first = BisectSession.start(h.path, [h.shas[0]], h.shas[-1], log)
    _, before = _run(first, h, oracle, steps=2)
    # "restart": a new session from the file alone
    resumed = BisectSession.resume(h.path, log)
    assert resumed.state.history == first.state.history and resumed.state.goods == first.state.goods
    end, after = _run(resumed, h, oracle)
    assert end == Done(h.shas[CULPRIT])
    assert before + after == straight  # same steps, none twice
    assert state_from_log(h.path, log)[1].first_bad == h.shas[CULPRIT]


def test_a_torn_last_line_is_ignored(h, tmp_path):
    log = tmp_path / "bisect.log"
    session = BisectSession.start(h.path, [h.shas[0]], h.shas[-1], log)
    step = session.next_step(lambda sha: sha)
    session.record(step.sha, "good")
    with open(log, "a") as f:
        f.write(f"git bisect bad {h.shas[CULPRIT][:20]}")  # the crash came mid-write
    state, _ = state_from_log(h.path, log)
    assert state.history == [(step.sha, "good")]


def test_start_refuses_an_existing_log_and_leaves_nothing_on_bad_input(h, tmp_path):
    log = tmp_path / "bisect.log"
    log.write_text("keep me\n")
    with pytest.raises(BisectInputError) as e:
        BisectSession.start(h.path, [h.shas[0]], h.shas[-1], log)
    assert e.value.field == "log" and log.read_text() == "keep me\n"
    fresh = tmp_path / "fresh.log"
    with pytest.raises(BisectInputError):
        BisectSession.start(h.path, ["no-such-rev"], h.shas[-1], fresh)
    assert not fresh.exists()


def test_parse_accepts_gits_own_logs_and_refuses_what_it_cannot_replay():
    text = ("# bad: [x] s\ngit bisect start 'v2' 'v1' '--'\ngit bisect old abc\ngit bisect new def\n"
            "git bisect skip aaa bbb\n")
    parsed = parse_log(text)
    assert parsed.start == ["v2", "v1"]
    assert parsed.events == [("good", "abc"), ("bad", "def"), ("skip", "aaa"), ("skip", "bbb")]
    for bad in ["git bisect good x\n", "git bisect start a b -- drivers/\n",
                "git bisect start --first-parent a\n", "rm -rf /\n",
                "git bisect start a b\ngit bisect skip a..b\n", ""]:
        with pytest.raises(BisectInputError) as e:
            parse_log(bad)
        assert e.value.field == "replay"
