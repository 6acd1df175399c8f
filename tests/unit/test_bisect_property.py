"""Property tests: on random DAGs with random culprits the engine agrees with plain ``git bisect run``.

Each example writes a fresh repository (fast-import, milliseconds) and runs real ``git bisect run``;
examples are capped so the module stays within a few seconds.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildbot_kernel.bisect.engine import Done, Unresolved, start_bisect
from tests.bisect.history import drive, git_bisect_run, make_history, random_dag

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _scenario(seed: int, n: int, merge_p: float):
    """A random DAG, a bad node, one or two good ancestors of it, and a culprit in the range."""
    rng = random.Random(seed)
    parents = random_dag(rng, n, merge_p)
    bad = n - 1
    anc = sorted(_ancestors(parents, bad) - {bad})
    goods = rng.sample(anc, k=min(len(anc), rng.choice([1, 1, 2])))
    in_range = _ancestors(parents, bad) - set().union(*(_ancestors(parents, g) for g in goods))
    culprit = rng.choice(sorted(in_range))
    return rng, parents, bad, goods, in_range, culprit


def _ancestors(parents, i):
    seen, todo = set(), [i]
    while todo:
        j = todo.pop()
        if j not in seen:
            seen.add(j)
            todo.extend(parents[j])
    return seen


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 40), merge_p=st.sampled_from([0.0, 0.2, 0.5]))
def test_same_first_bad_commit_as_git_bisect_run(seed, n, merge_p):
    _, parents, bad, goods, _, culprit = _scenario(seed, n, merge_p)
    with tempfile.TemporaryDirectory() as tmp:
        h = make_history(Path(tmp) / "repo", parents)
        state = start_bisect(h.path, [h.shas[g] for g in goods], h.shas[bad])
        run = drive(state, h.oracle(culprit), set(h.shas), allow_build=False)
        git = git_bisect_run(h, goods, bad, culprit)
    assert git.first_bad == h.shas[culprit]
    assert run.result == Done(h.shas[culprit])
    assert len(run.tested) <= git.steps + 1


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 40), k=st.integers(1, 6),
       skip_p=st.sampled_from([0.0, 0.2]))
def test_sparse_images_and_skips_end_with_a_proven_range(seed, n, k, skip_p):
    """Without builds the answer is a set holding the culprit, and nothing in it could still be tested."""
    rng, parents, bad, goods, in_range, culprit = _scenario(seed, n, 0.25)
    skip = {i for i in in_range if rng.random() < skip_p}
    with tempfile.TemporaryDirectory() as tmp:
        h = make_history(Path(tmp) / "repo", parents)
        imaged = {h.shas[i] for i in range(0, n, k)} | {h.shas[bad]}
        state = start_bisect(h.path, [h.shas[g] for g in goods], h.shas[bad])
        run = drive(state, h.oracle(culprit, skip), imaged, allow_build=False)
    assert set(run.tested) <= imaged
    if isinstance(run.result, Done):
        assert run.result.sha == h.shas[culprit]
    else:
        assert isinstance(run.result, Unresolved)
        left = set(run.result.candidates)
        assert h.shas[culprit] in left
        untestable = {h.shas[i] for i in skip} | (set(h.shas) - imaged) | {state.bad}
        assert left <= untestable


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 40), k=st.integers(2, 8))
def test_sparse_images_with_builds_find_the_culprit(seed, n, k):
    _, parents, bad, goods, _, culprit = _scenario(seed, n, 0.25)
    with tempfile.TemporaryDirectory() as tmp:
        h = make_history(Path(tmp) / "repo", parents)
        imaged = {h.shas[i] for i in range(0, n, k)}
        state = start_bisect(h.path, [h.shas[g] for g in goods], h.shas[bad])
        run = drive(state, h.oracle(culprit), imaged, allow_build=True)
    assert run.result == Done(h.shas[culprit])
    assert not set(run.built) & imaged
