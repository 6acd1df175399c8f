"""Multisection on generated histories: k = 1 is the engine, k points split a line into k+1 equal parts,
images come first, verdicts combine as git would keep them, and the log replays with real git."""

from __future__ import annotations

import math

import pytest

from buildbot_kernel.bisect.engine import BAD, GOOD, SKIP, Build, Done, Test, next_step, start_bisect
from buildbot_kernel.bisect.multisect import Round, next_round, record_round, round_order
from buildbot_kernel.bisect.session import BisectSession
from tests.bisect.history import drive, drive_rounds, git, linear, make_history, with_merges


@pytest.fixture(scope="module")
def lin(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("lin") / "repo", linear(121))


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("merged") / "repo", with_merges(200, seed=3))


def _start(h, good=0, bad=None):
    return start_bisect(h.path, [h.shas[good]], h.shas[len(h) - 1 if bad is None else bad])


@pytest.mark.parametrize("allow_build", [False, True])
@pytest.mark.parametrize("culprit", [1, 40, 119])
def test_one_machine_is_exactly_the_engine(lin, merged, culprit, allow_build):
    for h in (lin, merged):
        if not h.is_bad(len(h) - 1, culprit):
            continue
        imaged = {h.shas[i] for i in range(0, len(h), 7)}
        one = drive(_start(h), h.oracle(culprit), imaged, allow_build)
        rounds = drive_rounds(_start(h), h.oracle(culprit), imaged, 1, allow_build)
        assert [r for rnd in rounds.rounds for r in rnd] == one.tested
        assert rounds.built == one.built and rounds.result == one.result


def test_one_machine_round_carries_the_engines_step(lin):
    state = _start(lin)
    step = next_round(state, lambda s: s, machines=1)
    assert isinstance(step, Round) and step.steps == (next_step(state, lambda s: s),)


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_k_points_split_a_line_into_k_plus_one_nearly_equal_parts(lin, k):
    state = _start(lin)
    step = next_round(state, lambda s: s, machines=k)
    n = len(state.candidates())  # 120: commits 1..120
    assert len(step.steps) == k and all(isinstance(s, Test) for s in step.steps)
    positions = sorted(lin.index(s) for s in step.shas)
    cuts = [0, *positions, 120]
    parts = [b - a for a, b in zip(cuts, cuts[1:], strict=False)]
    assert max(parts) <= math.ceil(n / (k + 1)) + 1, parts
    assert step.worst_left == max(parts)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_rounds_fall_as_log_of_k_plus_one(lin, k):
    worst = 0
    for culprit in range(1, 121, 7):
        run = drive_rounds(_start(lin), lin.oracle(culprit), set(lin.shas), k, allow_build=False)
        assert run.result == Done(lin.shas[culprit])
        worst = max(worst, len(run.rounds))
    assert worst <= math.ceil(math.log(120) / math.log(k + 1)) + 1


def test_merges_find_the_culprit_with_every_k(merged):
    bad = len(merged) - 1
    for k in range(1, 9):
        for culprit in (5, 77, 150, 199):
            if merged.is_bad(bad, culprit):
                run = drive_rounds(_start(merged), merged.oracle(culprit), set(merged.shas), k, allow_build=False)
                assert run.result == Done(merged.shas[culprit]), (k, culprit)


def test_images_first_when_they_split_nearly_as_well(lin):
    state = _start(lin)
    best = next_round(state, lambda s: None, machines=3, allow_build=True)
    assert all(isinstance(s, Build) for s in best.steps)
    near = {lin.shas[lin.index(s) + 2] for s in best.shas}  # an image two commits from each best point
    step = next_round(state, lambda s: s if s in near else None, machines=3, allow_build=True)
    assert set(step.shas) == near and all(isinstance(s, Test) for s in step.steps)
    # one far-off image splits too badly: the best points are built
    far = {lin.shas[2]}
    step = next_round(state, lambda s: s if s in far else None, machines=3, allow_build=True)
    assert all(isinstance(s, Build) for s in step.steps) and set(step.shas) == set(best.shas)
    # building off: the image is tested however poorly it splits, never guessed at
    step = next_round(state, lambda s: s if s in far else None, machines=3, allow_build=False)
    assert step.shas == [lin.shas[2]]


def test_a_round_with_builds_tests_the_imaged_points_it_has(lin):
    state = _start(lin)
    best = next_round(state, lambda s: None, machines=3, allow_build=True)
    one = min(best.shas, key=lin.index)  # a quarter of the way: alone it splits too poorly (30 of 120)
    step = next_round(state, lambda s: s if s == one else None, machines=3, allow_build=True)
    assert step.shas == best.shas
    assert {s.sha for s in step.steps if isinstance(s, Test)} == {one}
    # the middle one alone halves the range: half as good as the best round, so min_split 0.5 takes it
    mid = sorted(best.shas, key=lin.index)[1]
    step = next_round(state, lambda s: s if s == mid else None, machines=3, allow_build=True)
    assert step.shas == [mid] and isinstance(step.steps[0], Test)
    step = next_round(state, lambda s: s if s == mid else None, machines=3, allow_build=True, min_split=0.7)
    assert step.shas == best.shas


def test_goods_first_then_bads_with_the_narrowest_last(lin):
    state = _start(lin)
    s = lin.shas
    order = round_order(state, [(s[90], BAD), (s[30], GOOD), (s[60], BAD), (s[45], SKIP)])
    assert order == [(s[30], GOOD), (s[45], SKIP), (s[90], BAD), (s[60], BAD)]
    record_round(state, [(s[90], BAD), (s[30], GOOD), (s[60], BAD), (s[45], SKIP)])
    assert state.bad == s[60] and s[30] in state.goods and len(state.candidates()) == 30


def test_contradicting_verdicts_become_skips(lin):
    state = _start(lin)
    s = lin.shas
    order = round_order(state, [(s[30], BAD), (s[60], GOOD), (s[90], BAD)])
    assert order == [(s[30], SKIP), (s[60], SKIP), (s[90], BAD)]
    with pytest.raises(ValueError, match="not in the current range"):
        round_order(state, [(s[0], GOOD)])
    with pytest.raises(ValueError, match="machines"):
        next_round(state, lambda x: x, machines=0)


def _replay(h, log, tmp_path):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(h.path), str(clone))
    done = git(clone, "bisect", "replay", str(log), check=False)
    out = done.stdout
    # 0, or 2 with git's "We cannot bisect more!" when only skipped commits are left
    assert done.returncode == 0 or "only 'skip'ped commits left" in out, done.stderr
    refs = dict(line.split()[::-1] for line in git(clone, "for-each-ref", "--format=%(objectname) %(refname)",
                                                   "refs/bisect/").stdout.splitlines())
    return out, refs


@pytest.mark.parametrize("k,culprit,skip", [(3, 150, set()), (4, 77, {76, 78}), (8, 199, set())])
def test_the_log_replays_with_real_git_bisect(merged, tmp_path, k, culprit, skip):
    bad = len(merged) - 1
    if not merged.is_bad(bad, culprit):
        pytest.skip("culprit not below the tip")
    session = BisectSession.start(merged.path, [merged.shas[0]], merged.shas[bad], tmp_path / "bisect.log")
    run = drive_rounds(session.state, merged.oracle(culprit, skip), set(merged.shas), k, False, session=session)
    text = (tmp_path / "bisect.log").read_text()
    assert text.count("# round ") == len(run.rounds) > 1
    out, refs = _replay(merged, tmp_path / "bisect.log", tmp_path)
    state = session.state
    assert refs == {"refs/bisect/bad": state.bad, **{f"refs/bisect/good-{g}": g for g in state.goods},
                    **{f"refs/bisect/skip-{x}": x for x in state.skipped}}
    if isinstance(run.result, Done):
        assert run.result.sha == merged.shas[culprit]
        assert f"{merged.shas[culprit]} is the first bad commit" in out
    else:
        assert set(run.result.candidates) <= set(out.split())  # git's "could be any of" list
    resumed = BisectSession.resume(merged.path, tmp_path / "bisect.log")
    assert resumed.state.bad == state.bad and resumed.rounds == len(run.rounds)


def test_two_bads_on_incomparable_branches_replay(tmp_path):
    # 0 good; 1 the culprit; 2 and 3 its children on two branches; 4 merges them (bad)
    h = make_history(tmp_path / "repo", [(), (0,), (1,), (1,), (2, 3)])
    session = BisectSession.start(h.path, [h.shas[0]], h.shas[4], tmp_path / "bisect.log")
    ordered = session.record_round([(h.shas[2], BAD), (h.shas[3], BAD), (h.shas[1], BAD)])
    assert ordered[-1] == (h.shas[1], BAD)  # the narrowest bad last: git keeps it
    assert session.next_round(lambda s: s, 2) == Done(h.shas[1])
    out, refs = _replay(h, tmp_path / "bisect.log", tmp_path)
    assert refs["refs/bisect/bad"] == h.shas[1] and f"{h.shas[1]} is the first bad commit" in out
    assert GOOD in (tmp_path / "bisect.log").read_text()
