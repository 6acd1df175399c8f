"""Multisection: with k test machines, which k commits to test in one round, and what their verdicts prove.

Pure, like :mod:`buildbot_kernel.bisect.engine`, whose state, verdicts and stopping rules it shares. With
``machines=1`` a round is exactly the engine's :func:`~buildbot_kernel.bisect.engine.next_step` (same
commit, same images-first rule, same builds), so a farm with one free machine bisects as before.

**What a round proves.** The world is monotone (a commit is bad when the first bad commit is among its
ancestors), so for a culprit ``c`` the verdict of a tested point ``p`` is "bad" exactly when
``c`` is an ancestor of ``p``. The verdicts of a round therefore narrow the range to one *cell*: the
commits that would give the same verdict on every point. A good removes its ancestors, a bad everything
that is not its ancestor; a skip removes nothing.

**Which k points.** We take git's own view of the range (``rev-list --bisect-all``: every commit
reachable from bad and from no good, merges included, the same set git narrows) and, for each
candidate, its ancestors inside the range, as bit sets. A choice of points is scored by the cell
sizes it leaves: first the *largest* cell (the most candidates any verdicts can leave: the next
round's worst case, which is what decides how many rounds a bisection takes), then the sum of the
squared sizes (the expected size of the next range when the culprit could be any candidate). For a
linear range of n commits the best points are the quantiles ``i*n/(k+1)``: k+1 equal cells, and
log(n)/log(k+1) rounds instead of log2(n) steps. For a DAG no closed form exists (the cells of
incomparable points intersect), so the points are found by a greedy choice (add the point that most
improves the score, k times) followed by coordinate descent (replace each point by the best one given
the others, until no replacement improves the score). On a line this converges to the quantiles; it
costs O(k * candidates * cells) per pass, milliseconds for a thousand commits. For k = 1 the score's
best point is git's own midpoint (``dist`` is the smaller side of the split), which is why k = 1 can
simply be the engine's rule.

**Images first.** The engine's ``min_split`` rule, generalised with ``gain = candidates - worst cell``
(for one point, ``gain`` is git's ``dist``): the best round of points that all have images is tested
when its gain is at least ``min_split`` times the gain of the best round over all candidates (or when
building is off: an image is never guessed at); otherwise the best round is tested, the points without
an image built first (all in parallel: a round costs one build time, not k). The best round already
prefers imaged points among equally good ones.

**Writing it down.** ``git bisect`` keeps one bad revision: a later ``git bisect bad`` replaces it. The
round's verdicts are therefore applied (and logged) goods first, then skips, then bads with the one
leaving the fewest candidates last, so the log replays with ``git bisect replay`` to the same state and
that state is the narrowest single-bad range (with two bads on incomparable branches, git's range keeps
the part below the other bad: correct, if one round slower than the intersection). A round whose
verdicts contradict each other (a bad ancestor of a good, from a flaky test) cannot be monotone: both
verdicts are recorded as skips, which keeps the log replayable and claims nothing the tests did not show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from buildbot_kernel.bisect.engine import (
    BAD,
    DEFAULT_MIN_SPLIT,
    GOOD,
    SKIP,
    BisectState,
    Build,
    Done,
    Test,
    Unresolved,
    next_step,
)

MAX_PASSES = 6  # coordinate-descent passes; on a thousand-commit line it settles in three or four


@dataclass(frozen=True)
class Round:
    """Test these commits side by side (build the :class:`Build` ones first), then record all verdicts
    with :func:`record_round`. ``worst_left`` is the most candidates the round's verdicts can leave."""

    steps: tuple[Test | Build, ...]
    candidates_left: int
    worst_left: int

    @property
    def shas(self) -> list[str]:
        return [s.sha for s in self.steps]


RoundStep = Round | Done | Unresolved


@dataclass(frozen=True)
class _Ancestry:
    """The range as bit sets: bit i is the range's i-th commit (parents before children)."""

    index: dict[str, int]
    masks: list[int]  # masks[i]: commit i and its ancestors inside the range

    @property
    def full(self) -> int:
        return (1 << len(self.masks)) - 1

    def of(self, sha: str) -> int:
        return self.masks[self.index[sha]]


def ancestry(state: BisectState) -> _Ancestry:
    """Ancestor bit sets of the current range, from one ``rev-list --parents`` (cached per range)."""
    key = ("ancestry", state.bad, tuple(sorted(state.goods)))
    if key not in state._cache:
        rows = state.repo.range_parents(state.bad, state.goods)
        index = {sha: i for i, (sha, _) in enumerate(rows)}
        masks: list[int] = []
        for i, (_, parents) in enumerate(rows):
            m = 1 << i
            for p in parents:
                j = index.get(p)
                if j is not None:
                    m |= masks[j]
            masks.append(m)
        state._cache[key] = _Ancestry(index, masks)
    return state._cache[key]


def next_round(state: BisectState, has_image: Callable[[str], Any], machines: int = 1, allow_build: bool = False,
               min_split: float = DEFAULT_MIN_SPLIT) -> RoundStep:
    """Up to ``machines`` commits to test at once, or :class:`Done` / :class:`Unresolved`.

    ``has_image`` and ``min_split`` mean what they mean to :func:`engine.next_step`; the rule for k > 1
    is in the module docstring. A round may hold fewer steps than machines (a small range, or fewer
    images than machines when they split well enough).
    """
    if not isinstance(machines, int) or machines < 1:
        raise ValueError(f"machines {machines!r}: at least one test machine is needed")
    first = next_step(state, has_image, allow_build, min_split)  # the k = 1 answer, and every ending
    if not isinstance(first, (Test, Build)):
        return first
    n = first.candidates_left
    if machines == 1:
        return Round((first,), n, n - first.dist)
    anc = ancestry(state)
    skipped = set(state.skipped)
    testable = [c.sha for c in state.candidates() if c.sha != state.bad and c.sha not in skipped]
    images = {sha: has_image(sha) for sha in testable}
    imaged = [sha for sha in testable if images[sha] is not None]
    k = min(machines, len(testable))

    def steps(points: Sequence[str]) -> tuple[Test | Build, ...]:
        out = []
        for sha in points:
            dist = n - _score(_cells(anc.full, [anc.of(sha)]))[0]
            out.append(Test(sha, images[sha], dist, n) if images[sha] is not None else Build(sha, dist, n))
        return tuple(out)

    if not allow_build:  # the engine found an image to test, so ``imaged`` is not empty
        pts, score = choose_points(anc, imaged, min(k, len(imaged)))
        return Round(steps(pts), n, score[0])
    best_pts, best_score = choose_points(anc, testable, k, prefer=set(imaged))
    if imaged and any(images[s] is None for s in best_pts):
        img_pts, img_score = choose_points(anc, imaged, min(k, len(imaged)))
        if n - img_score[0] >= min_split * (n - best_score[0]):
            return Round(steps(img_pts), n, img_score[0])
    return Round(steps(best_pts), n, best_score[0])


def choose_points(anc: _Ancestry, eligible: Sequence[str], k: int,
                  prefer: set[str] = frozenset()) -> tuple[list[str], tuple[int, int]]:
    """The k eligible commits whose verdicts leave the smallest worst-case cell (then the smallest sum of
    squared cells); ties go to ``prefer`` (commits with images), then to the earlier in ``eligible``
    (git's best-split-first order). Returns the points (in ``eligible``'s order) and their score."""
    full = anc.full
    masks = [anc.of(s) for s in eligible]
    rank = [(0 if s in prefer else 1, i) for i, s in enumerate(eligible)]
    chosen: list[int] = []
    for _ in range(min(k, len(eligible))):  # greedy
        chosen.append(_best_addition(full, masks, rank, chosen))
    score = _score(_cells(full, [masks[i] for i in chosen]))
    for _ in range(MAX_PASSES):  # coordinate descent: move one point at a time while it helps
        improved = False
        for slot in range(len(chosen)):
            others = chosen[:slot] + chosen[slot + 1:]
            j = _best_addition(full, masks, rank, others)
            new = _score(_cells(full, [masks[i] for i in others + [j]]))
            if j != chosen[slot] and (new, rank[j]) < (score, rank[chosen[slot]]):
                chosen[slot], score, improved = j, new, True
        if not improved:
            break
    return [eligible[i] for i in sorted(chosen)], score


def _best_addition(full: int, masks: list[int], rank: list[tuple[int, int]], chosen: list[int]) -> int:
    cells = [(c, c.bit_count()) for c in _cells(full, [masks[i] for i in chosen])]
    taken = set(chosen)
    best, best_key = -1, None
    for j, m in enumerate(masks):
        if j in taken:
            continue
        worst = squares = 0
        for c, size in cells:
            a = (c & m).bit_count()
            b = size - a
            worst = max(worst, a, b)
            squares += a * a + b * b
        key = (worst, squares, rank[j])
        if best_key is None or key < best_key:
            best, best_key = j, key
    return best


def _cells(full: int, masks: list[int]) -> list[int]:
    cells = [full]
    for m in masks:
        cells = [part for c in cells for part in (c & m, c & ~m) if part]
    return cells


def _score(cells: list[int]) -> tuple[int, int]:
    sizes = [c.bit_count() for c in cells]
    return max(sizes), sum(s * s for s in sizes)


def round_order(state: BisectState, verdicts: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The round's verdicts as they must be applied and logged: goods, skips, then bads with the one that
    leaves the fewest candidates last (``git bisect`` keeps the last bad). Contradicting verdicts (a bad
    that is an ancestor of a good of the same round) both become skips. Module docstring: why."""
    anc = ancestry(state)
    for sha, verdict in verdicts:
        if verdict not in (GOOD, BAD, SKIP):
            raise ValueError(f"verdict {verdict!r} for {sha} is not good, bad or skip")
        if sha not in anc.index:
            raise ValueError(f"{sha} is not in the current range: it was not one of this round's commits")
    verdicts = list(dict.fromkeys(verdicts))
    goods = [s for s, v in verdicts if v == GOOD]
    bads = [s for s, v in verdicts if v == BAD]
    below_goods = 0
    for g in goods:
        below_goods |= anc.of(g)
    contradicting = {b for b in bads if (1 << anc.index[b]) & below_goods}
    contradicting |= {g for g in goods for b in contradicting if anc.of(g) >> anc.index[b] & 1}
    out = [(s, GOOD) for s in goods if s not in contradicting]
    out += [(s, SKIP) for s, v in verdicts if v == SKIP or s in contradicting]
    clean_goods = 0
    for g, verdict in out:
        if verdict == GOOD:
            clean_goods |= anc.of(g)
    kept = [b for b in bads if b not in contradicting]
    kept.sort(key=lambda b: -(anc.of(b) & ~clean_goods).bit_count())  # stable: fewest left goes last
    return out + [(b, BAD) for b in kept]


def record_round(state: BisectState, verdicts: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Apply a round's verdicts (see :func:`round_order`); returns them in the order applied."""
    ordered = round_order(state, verdicts)
    for sha, verdict in ordered:
        state.record(sha, verdict)
    return ordered
