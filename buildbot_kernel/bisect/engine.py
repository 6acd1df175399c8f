"""The bisect engine: which commit to test next, given what has an image, and when to stop.

Pure: no Buildbot, no Twisted, no network. It holds the bisection state (good revisions, the bad one,
verdicts, skips) and asks git for the candidate set after every verdict, so merges, several good
revisions and the narrowing are exactly git's (``git rev-list --bisect-all <bad> ^<good>...``).

The one decision of its own is *which* candidate to test, because a candidate that already has a kernel
image costs a test, while any other costs a build first:

* git's own midpoint (what ``git bisect`` would check out) is tested when it has an image;
* otherwise the candidate with an image that splits best is tested, when its split is good enough:
  ``dist(imaged) >= min_split * dist(git's midpoint)`` (``dist`` as ``rev-list --bisect-all`` prints
  it: the smaller side of the split, in commits). ``min_split=0.5`` (the default) accepts an image
  that leaves at most about three quarters of the range, which costs less than one extra step on
  average while sparing a build (minutes) for a test (seconds);
* otherwise, when building is allowed, git's midpoint is to be built (:class:`Build`); when it is not,
  the best imaged candidate is tested however poorly it splits (an image is never guessed at), and
  when no candidate has an image the bisection ends :class:`Unresolved` with the proven range.

With skips the midpoint is the best-splitting commit that is not skipped. (``git bisect`` instead
jumps a pseudo-random distance away from a skipped midpoint; both end with the same proven set.)

Several test machines at once (k commits per round) is :mod:`buildbot_kernel.bisect.multisect`, which
is this module's :func:`next_step` when k = 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.gitrepo import Candidate, Repo

GOOD, BAD, SKIP = "good", "bad", "skip"
VERDICTS = (GOOD, BAD, SKIP)
DEFAULT_MIN_SPLIT = 0.5
_FULL_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?\Z")

# reasons an Unresolved step gives (the code is for programs, the text for people)
ONLY_SKIPPED = "only-skipped"
NO_IMAGES = "no-images"


class BisectInputError(BuildbotKernelError, ValueError):
    """Input refused before any work: ``field`` names the offending input (repo, good, bad, ...)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# ---- steps: what next_step() asks the caller to do -------------------------------------------------


@dataclass(frozen=True)
class Test:
    """Test ``sha`` with its existing ``image`` (whatever ``has_image`` returned) and record the verdict."""

    __test__ = False  # not a pytest class, whatever its name

    sha: str
    image: Any
    dist: int
    candidates_left: int


@dataclass(frozen=True)
class Build:
    """Build an image of ``sha`` (git's midpoint), then call next_step again: it will test it."""

    sha: str
    dist: int
    candidates_left: int


@dataclass(frozen=True)
class Done:
    """``sha`` is the first bad commit."""

    sha: str


@dataclass(frozen=True)
class Unresolved:
    """The first bad commit is one of ``candidates`` (oldest first); ``reason`` says why no further step."""

    candidates: tuple[str, ...]
    reason: str
    code: str


Step = Test | Build | Done | Unresolved


@dataclass(frozen=True)
class Prefetch:
    """Commits without images that will be git's next midpoint if the current test says good / bad."""

    if_good: str | None
    if_bad: str | None

    def shas(self) -> list[str]:
        return [s for s in dict.fromkeys((self.if_good, self.if_bad)) if s]


# ---- state ------------------------------------------------------------------------------------------


@dataclass
class BisectState:
    """Everything a bisection knows; rebuilt from the bisect log on resume (see ``bisect.log``)."""

    repo: Repo
    bad: str
    goods: list[str]
    skipped: list[str] = field(default_factory=list)
    # (sha, verdict) in the order they were given, the start revisions excluded
    history: list[tuple[str, str]] = field(default_factory=list)
    # candidates per (bad, goods): shared between copies, so prefetch's what-ifs reuse git's answers
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def steps_done(self) -> int:
        return len(self.history)

    def record(self, sha: str, verdict: str) -> None:
        """Apply a verdict as ``git bisect good|bad|skip <sha>`` would."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        if not _FULL_SHA.match(sha):
            raise ValueError(f"verdict for {sha!r}: a full lowercase commit sha is expected")
        if verdict == GOOD:
            if sha not in self.goods:
                self.goods.append(sha)
        elif verdict == BAD:
            self.bad = sha
        elif sha not in self.skipped:
            self.skipped.append(sha)
        self.history.append((sha, verdict))

    def copy(self) -> BisectState:
        return BisectState(self.repo, self.bad, list(self.goods), list(self.skipped), list(self.history),
                           self._cache)

    def candidates(self) -> list[Candidate]:
        """git's candidate list for the current range (the bad commit included), best split first."""
        key = (self.bad, tuple(sorted(self.goods)))
        if key not in self._cache:
            self._cache[key] = self.repo.bisect_all(self.bad, self.goods)
        return self._cache[key]


def start_bisect(repo: str | Path | Repo, good: Iterable[str], bad: str) -> BisectState:
    """Validate the input and return the initial state, or raise :class:`BisectInputError`.

    Refused: a path that is no git repository, revisions that name no commit, good == bad, a good that
    is not an ancestor of bad (git would first test merge bases; we ask the user to say what they mean),
    and an empty range. Nothing is written anywhere before these checks pass.
    """
    repo = repo if isinstance(repo, Repo) else Repo(repo)
    if not repo.is_repository():
        raise BisectInputError("repo", f"{repo.path} is not a git repository; give the path of a clone")
    if not bad or not bad.strip():
        raise BisectInputError("bad", "a bad revision is required (the first revision known to fail)")
    bad_sha = repo.resolve(bad.strip())
    if bad_sha is None:
        raise BisectInputError("bad", f"{bad!r} names no commit in {repo.path}; fetch it or fix the name")
    good = [g.strip() for g in good if g and g.strip()]
    if not good:
        raise BisectInputError("good", "at least one good revision is required (a revision known to work)")
    goods: list[str] = []
    for rev in good:
        sha = repo.resolve(rev)
        if sha is None:
            raise BisectInputError("good", f"{rev!r} names no commit in {repo.path}; fetch it or fix it")
        if sha == bad_sha:
            raise BisectInputError("good", f"{rev!r} is the bad commit {bad_sha} itself; "
                                   "give an older good revision")
        if not repo.is_ancestor(sha, bad_sha):
            raise BisectInputError(
                "good", f"{rev!r} ({sha}) is not an ancestor of bad {bad!r} ({bad_sha}); give a good "
                "revision that bad was built on (are good and bad swapped?)")
        if sha not in goods:
            goods.append(sha)
    state = BisectState(repo, bad_sha, goods)
    if not state.candidates():
        raise BisectInputError("good", f"no commit is reachable from bad {bad_sha} and from no good "
                               "revision: the range is empty")
    return state


# ---- the decision -----------------------------------------------------------------------------------


def next_step(state: BisectState, has_image: Callable[[str], Any], allow_build: bool = False,
              min_split: float = DEFAULT_MIN_SPLIT) -> Step:
    """The next thing to do: :class:`Test`, :class:`Build`, :class:`Done` or :class:`Unresolved`.

    ``has_image(sha)`` returns the image for that commit (any object, handed back in :class:`Test`) or
    None; it is called for many candidates, so make it a dictionary lookup. ``min_split`` is the rule in
    the module docstring: how well an existing image must split, relative to git's midpoint, to be
    tested instead of building the midpoint. It only matters when ``allow_build`` is true.
    """
    if not 0.0 <= min_split <= 1.0:
        raise ValueError(f"min_split {min_split} is outside 0..1")
    cands = state.candidates()
    if len(cands) <= 1:
        return Done(state.bad)
    skipped = set(state.skipped)
    testable = [c for c in cands if c.sha != state.bad and c.sha not in skipped]
    if not testable:
        return Unresolved(remaining_candidates(state), _only_skipped_reason(cands, skipped), ONLY_SKIPPED)
    best = _midpoint(state, cands, testable, skipped)
    image = has_image(best.sha)
    if image is not None:
        return Test(best.sha, image, best.dist, len(cands))
    imaged, image = _best_imaged(testable, has_image)
    if imaged is not None and (not allow_build or imaged.dist >= min_split * best.dist):
        return Test(imaged.sha, image, imaged.dist, len(cands))
    if allow_build:
        return Build(best.sha, best.dist, len(cands))
    n_skipped = sum(1 for c in cands if c.sha in skipped)
    reason = (f"none of the {len(testable)} untested commits left has an image for this build"
              + (f" ({n_skipped} more were skipped)" if n_skipped else "")
              + " and building is off; the first bad commit is proven to be one of these")
    return Unresolved(remaining_candidates(state), reason, NO_IMAGES)


def prefetch(state: BisectState, sha: str, has_image: Callable[[str], Any],
             min_split: float = DEFAULT_MIN_SPLIT) -> Prefetch:
    """What to build ahead while ``sha`` is being tested: the commit each verdict would send us to
    build next (None when that verdict leads to an image, or to the end)."""
    nxt = {}
    for verdict in (GOOD, BAD):
        what_if = state.copy()
        what_if.record(sha, verdict)
        step = next_step(what_if, has_image, allow_build=True, min_split=min_split)
        nxt[verdict] = step.sha if isinstance(step, Build) else None
    return Prefetch(nxt[GOOD], nxt[BAD])


def steps_left_estimate(candidates_left: int) -> int:
    """About how many more tests: log2 of the range (git's "roughly N steps")."""
    return math.ceil(math.log2(candidates_left)) if candidates_left > 1 else 0


def _midpoint(state: BisectState, cands: list[Candidate], testable: list[Candidate],
              skipped: set[str]) -> Candidate:
    """git's next commit: ``rev-list --bisect`` when nothing in range is skipped, which picks among
    equally good splits the way ``git bisect`` does; else the best split that is not skipped."""
    if any(c.sha in skipped for c in cands) or state.repo.has_bisect_refs():
        return testable[0]
    key = ("pick", state.bad, tuple(sorted(state.goods)))
    if key not in state._cache:
        state._cache[key] = state.repo.bisect_pick(state.bad, state.goods)
    pick = state._cache[key]
    by_sha = {c.sha: c for c in testable}
    return by_sha.get(pick, testable[0])


def _best_imaged(testable: list[Candidate], has_image: Callable[[str], Any]) -> tuple[Candidate | None, Any]:
    for c in testable:  # best split first
        image = has_image(c.sha)
        if image is not None:
            return c, image
    return None, None


def _only_skipped_reason(cands: list[Candidate], skipped: set[str]) -> str:
    n = sum(1 for c in cands if c.sha in skipped)
    return (f"only skipped commits are left to test ({n} skipped): the first bad commit is one of them "
            "or the bad commit")


def remaining_candidates(state: BisectState) -> tuple[str, ...]:
    """The commits the first bad one is proven to be among, oldest first (the bad commit last)."""
    return state.repo.range_commits(state.bad, state.goods)
