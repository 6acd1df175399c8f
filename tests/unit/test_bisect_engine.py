"""The bisect engine on generated histories: linear, with merges, skips, and images on every commit /
every k-th commit / none, compared with plain ``git bisect run`` in the same repository."""

from __future__ import annotations

import math

import pytest

from buildbot_kernel.bisect.engine import (
    NO_IMAGES,
    ONLY_SKIPPED,
    BisectInputError,
    Build,
    Done,
    Test,
    Unresolved,
    next_step,
    prefetch,
    remaining_candidates,
    start_bisect,
    steps_left_estimate,
)
from tests.bisect.history import drive, git, git_bisect_run, linear, make_history, with_merges


@pytest.fixture(scope="module")
def lin(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("lin") / "repo", linear(64))


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("merged") / "repo", with_merges(120, seed=7))


def everything(h):
    return set(h.shas)


@pytest.mark.parametrize("culprit", [1, 2, 17, 31, 32, 62, 63])
def test_linear_all_images_matches_git(lin, culprit):
    run = drive(start_bisect(lin.path, [lin.shas[0]], lin.shas[63]), lin.oracle(culprit), everything(lin),
                allow_build=False)
    git = git_bisect_run(lin, [0], 63, culprit)
    assert run.result == Done(lin.shas[culprit])
    assert git.first_bad == lin.shas[culprit]
    assert len(run.tested) == git.steps  # same midpoints as git: same number of tests
    assert run.built == []


@pytest.mark.parametrize("culprit", [5, 40, 77, 118])
def test_merges_all_images_matches_git(merged, culprit):
    bad = len(merged) - 1
    if not merged.is_bad(bad, culprit):
        pytest.skip("culprit not below the tip")
    run = drive(start_bisect(merged.path, [merged.shas[0]], merged.shas[bad]), merged.oracle(culprit),
                everything(merged), allow_build=False)
    git = git_bisect_run(merged, [0], bad, culprit)
    assert run.result == Done(merged.shas[culprit]) and git.first_bad == merged.shas[culprit]
    assert len(run.tested) == git.steps


def test_several_goods_on_merged_branches(merged):
    bad = len(merged) - 1
    # a good on a topic branch and one on mainline: the range is what neither reaches, as in git
    topic = next(i for i, ps in enumerate(merged.parents) if len(ps) == 2)
    goods = [merged.parents[topic][1], 10]
    state = start_bisect(merged.path, [merged.shas[g] for g in goods], merged.shas[bad])
    in_range = set(merged.ancestors(bad)) - merged.ancestors(goods[0]) - merged.ancestors(goods[1])
    assert {c.sha for c in state.candidates()} == {merged.shas[i] for i in in_range}
    culprit = max(in_range - {bad})
    run = drive(state, merged.oracle(culprit), everything(merged), allow_build=False)
    assert run.result == Done(merged.shas[culprit])
    assert len(run.tested) == git_bisect_run(merged, goods, bad, culprit).steps


def test_skips_around_the_culprit_leave_a_proven_set(lin):
    culprit, skip = 20, {19, 20, 21}
    run = drive(start_bisect(lin.path, [lin.shas[0]], lin.shas[63]), lin.oracle(culprit, skip),
                everything(lin), allow_build=False)
    assert isinstance(run.result, Unresolved) and run.result.code == ONLY_SKIPPED
    # the culprit and its neighbours are skipped: "one of 19, 20, 21 (skipped) or the first bad 22"
    assert run.result.candidates == tuple(lin.shas[i] for i in (19, 20, 21, 22))
    assert set(git_bisect_run(lin, [0], 63, culprit, skip).could_be) == set(run.result.candidates)


def test_a_skip_away_from_the_culprit_is_walked_around(lin):
    state = start_bisect(lin.path, [lin.shas[0]], lin.shas[63])
    first = lin.index(next_step(state, lambda s: s).sha)
    run = drive(state, lin.oracle(40, {first}), everything(lin), allow_build=False)
    assert run.result == Done(lin.shas[40])
    assert run.tested[0] == lin.shas[first] and state.skipped == [lin.shas[first]]  # tried, skipped, went on


@pytest.mark.parametrize("k", [4, 10])
def test_images_every_kth_without_builds_ends_with_the_smallest_proven_range(lin, k):
    culprit = 27
    imaged = {lin.shas[i] for i in range(0, 64, k)} | {lin.shas[63]}
    run = drive(start_bisect(lin.path, [lin.shas[0]], lin.shas[63]), lin.oracle(culprit), imaged,
                allow_build=False)
    assert all(s in imaged for s in run.tested)  # never a commit without an image
    assert isinstance(run.result, Unresolved) and run.result.code == NO_IMAGES
    lo, hi = (culprit // k) * k, min((culprit // k + 1) * k, 63)  # imaged neighbours: good lo, bad hi
    assert run.result.candidates == tuple(lin.shas[lo + 1: hi + 1])
    assert len(run.result.candidates) <= k


@pytest.mark.parametrize("k", [4, 10])
def test_images_every_kth_with_builds_finds_the_culprit(lin, k):
    culprit = 27
    imaged = {lin.shas[i] for i in range(0, 64, k)} | {lin.shas[63]}
    run = drive(start_bisect(lin.path, [lin.shas[0]], lin.shas[63]), lin.oracle(culprit), imaged,
                allow_build=True)
    assert run.result == Done(lin.shas[culprit])
    # builds only inside the last gap between two images: about log2(k) of them, never more than k - 1
    assert 1 <= len(run.built) <= min(k - 1, math.ceil(math.log2(k)) + 1)
    assert len(run.tested) <= git_bisect_run(lin, [0], 63, culprit).steps + 3


def test_no_images_builds_git_midpoints(lin):
    run = drive(start_bisect(lin.path, [lin.shas[0]], lin.shas[63]), lin.oracle(50), set(), allow_build=True)
    assert run.result == Done(lin.shas[50])
    assert run.built == run.tested  # every test needed a build, of exactly git's midpoint
    assert len(run.tested) == git_bisect_run(lin, [0], 63, 50).steps


def test_no_images_and_no_builds_is_unresolved_at_once(lin):
    state = start_bisect(lin.path, [lin.shas[10]], lin.shas[20])
    step = next_step(state, lambda sha: None, allow_build=False)
    assert isinstance(step, Unresolved) and step.code == NO_IMAGES
    assert step.candidates == tuple(lin.shas[11:21]) == remaining_candidates(state)
    assert "building is off" in step.reason


def test_min_split_decides_between_a_poor_image_and_a_build(lin):
    state = start_bisect(lin.path, [lin.shas[0]], lin.shas[63])
    poor = lin.shas[4]  # splits 4 : 59, git's midpoint splits 31/32 : 32/31
    has = {poor: "img-4"}.get
    assert isinstance(next_step(state, has, allow_build=True), Build)
    assert next_step(state, has, allow_build=True, min_split=0.1) == Test(poor, "img-4", 4, 63)
    assert next_step(state, has, allow_build=False).sha == poor  # no building: the image it has
    good_enough = lin.shas[20]  # 20 >= 0.5 * 32
    assert next_step(state, {good_enough: "i"}.get, allow_build=True).sha == good_enough


def test_prefetch_names_both_next_midpoints(lin):
    state = start_bisect(lin.path, [lin.shas[0]], lin.shas[63])
    first = next_step(state, lambda sha: None, allow_build=True)
    assert isinstance(first, Build)
    ahead = prefetch(state, first.sha, lambda sha: None)
    for verdict, want in (("good", ahead.if_good), ("bad", ahead.if_bad)):
        what_if = state.copy()
        what_if.record(first.sha, verdict)
        step = next_step(what_if, lambda sha: None, allow_build=True)
        assert step == Build(want, *_dist_left(what_if, want))
    mid = lin.index(first.sha)
    assert lin.index(ahead.if_good) > mid > lin.index(ahead.if_bad)
    assert state.history == []  # the what-ifs left the real state alone
    # when one side already has an image, only the other needs building
    assert prefetch(state, first.sha, {ahead.if_good: "img"}.get).shas() == [ahead.if_bad]


def _dist_left(state, sha):
    c = {c.sha: c for c in state.candidates()}[sha]
    return c.dist, len(state.candidates())


def test_done_at_once_when_good_is_bads_parent(lin):
    assert next_step(start_bisect(lin.path, [lin.shas[9]], lin.shas[10]), lambda s: s) == Done(lin.shas[10])


def test_progress_estimate():
    assert [steps_left_estimate(n) for n in (1, 2, 3, 4, 5, 1000)] == [0, 1, 2, 2, 3, 10]


@pytest.mark.parametrize("good, bad, field, words", [
    (["nosuchrev"], "main", "good", "names no commit"),
    (["tip-63~63"], "nosuchrev", "bad", "names no commit"),
    (["main"], "main", "good", "is the bad commit"),
    (["tip-63~3"], "tip-63~10", "good", "not an ancestor"),
    ([], "main", "good", "required"),
    (["tip-63~3"], "", "bad", "required"),
])
def test_bad_input_is_refused_with_the_field(lin, good, bad, field, words):
    with pytest.raises(BisectInputError) as e:
        start_bisect(lin.path, good, bad)
    assert e.value.field == field and words in e.value.message


def test_not_a_repository(tmp_path):
    with pytest.raises(BisectInputError) as e:
        start_bisect(tmp_path, ["a"], "b")
    assert e.value.field == "repo"


def test_record_refuses_nonsense(lin):
    state = start_bisect(lin.path, [lin.shas[0]], lin.shas[63])
    with pytest.raises(ValueError, match="verdict"):
        state.record(lin.shas[5], "maybe")
    with pytest.raises(ValueError, match="full"):
        state.record("abc123", "good")


def test_a_git_bisect_in_progress_in_the_same_clone_does_not_steer_us(tmp_path):
    h = make_history(tmp_path / "repo", linear(33))
    # the user's own half-done "git bisect" says good at 30: rev-list --bisect would obey it
    def run_once():
        return drive(start_bisect(h.path, [h.shas[0]], h.shas[32]), h.oracle(3), everything(h), False)

    clean = run_once()
    git(h.path, "update-ref", f"refs/bisect/good-{h.shas[30]}", h.shas[30])
    run = run_once()
    assert run.result == clean.result == Done(h.shas[3])
    assert len(run.tested) == len(clean.tested) == 5  # still halving 32 candidates
