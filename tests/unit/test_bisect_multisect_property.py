"""Property tests: multisection with k = 1..8 machines agrees with plain ``git bisect run``.

Random DAGs (linear and with merges), a monotone culprit and random skips. Without skips both must name
the culprit. With skips the answer may be a set: on a line it is the same set as git's (every order of
tests ends at the same block of skipped commits). In a DAG with skips the set depends on which commits
were tested before the range closed in (git itself picks skipped-around commits pseudo-randomly), so
there both sets must be *proven*: each holds the culprit, and every member but the bad one is skipped.
Examples are capped so the module stays well under a minute.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildbot_kernel.bisect.engine import Done, Unresolved, start_bisect
from tests.bisect.history import drive_rounds, git_bisect_run, make_history, random_dag

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ancestors(parents, i):
    seen, todo = set(), [i]
    while todo:
        j = todo.pop()
        if j not in seen:
            seen.add(j)
            todo.extend(parents[j])
    return seen


def _scenario(seed, n, merge_p, skip_p):
    rng = random.Random(seed)
    parents = random_dag(rng, n, merge_p)
    bad = n - 1
    anc = sorted(_ancestors(parents, bad) - {bad})
    goods = rng.sample(anc, k=min(len(anc), rng.choice([1, 1, 2])))
    in_range = _ancestors(parents, bad) - set().union(*(_ancestors(parents, g) for g in goods))
    culprit = rng.choice(sorted(in_range))
    skip = {i for i in in_range - {bad} if rng.random() < skip_p}
    return parents, bad, goods, culprit, skip


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 60), merge_p=st.sampled_from([0.0, 0.25, 0.5]),
       skip_p=st.sampled_from([0.0, 0.0, 0.15, 0.4]))
def test_every_k_ends_where_git_bisect_run_ends(seed, n, merge_p, skip_p):
    parents, bad, goods, culprit, skip = _scenario(seed, n, merge_p, skip_p)
    with tempfile.TemporaryDirectory() as tmp:
        h = make_history(Path(tmp) / "repo", parents)
        git = git_bisect_run(h, goods, bad, culprit, skip)
        results = {}
        for k in range(1, 9):
            state = start_bisect(h.path, [h.shas[g] for g in goods], h.shas[bad])
            results[k] = drive_rounds(state, h.oracle(culprit, skip), set(h.shas), k, allow_build=False).result
    skipped = {h.shas[i] for i in skip}
    git_set = {git.first_bad} if git.first_bad else git.could_be
    assert h.shas[culprit] in git_set
    for k, result in results.items():
        if not skip:
            assert result == Done(h.shas[culprit]) and git.first_bad == h.shas[culprit], k
            continue
        ours = {result.sha} if isinstance(result, Done) else set(result.candidates)
        assert isinstance(result, (Done, Unresolved))
        assert h.shas[culprit] in ours, k
        if isinstance(result, Unresolved):
            assert len(ours - skipped) <= 1, k  # only skipped commits (and the bad one) are left
        if merge_p == 0.0:
            assert ours == git_set, k  # a line: the same answer as git, whatever the order
