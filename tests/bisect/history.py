"""Generated git histories for bisect tests and the bisect benchmark.

A history is a DAG given as parent lists (node i's parents are < i), written as real commits with
``git fast-import`` (a thousand commits in well under a second). A planted regression is a culprit
node: a commit is bad exactly when the culprit is among its ancestors (itself included), which is the
monotonic world ``git bisect`` assumes, so the first bad commit is the culprit itself.
"""

from __future__ import annotations

import random
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

EPOCH = 1_700_000_000


def git(repo: Path, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=check, **kw)


@dataclass
class History:
    path: Path
    parents: list[tuple[int, ...]]
    shas: list[str] = field(default_factory=list)
    _anc: dict[int, frozenset[int]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.parents)

    def index(self, sha: str) -> int:
        return self.shas.index(sha)

    def ancestors(self, i: int) -> frozenset[int]:
        """Node i and everything reachable from it."""
        if i not in self._anc:
            acc = {i}
            for p in self.parents[i]:
                acc |= self.ancestors(p)
            self._anc[i] = frozenset(acc)
        return self._anc[i]

    def is_bad(self, node: int, culprit: int) -> bool:
        return culprit in self.ancestors(node)

    def oracle(self, culprit: int, skip: set[int] = frozenset()) -> Callable[[str], str]:
        """The test a perfect tester would run: sha -> good / bad / skip."""
        by_sha = {s: i for i, s in enumerate(self.shas)}

        def verdict(sha: str) -> str:
            i = by_sha[sha]
            if i in skip:
                return "skip"
            return "bad" if self.is_bad(i, culprit) else "good"

        return verdict


def make_history(path: Path, parents: list[tuple[int, ...]]) -> History:
    """Write the DAG as commits "c<i>" into a new repository at ``path``; tips get tags ``tip-<i>``."""
    for i, ps in enumerate(parents):
        assert all(p < i for p in ps) and (ps or i == 0), f"node {i} has bad parents {ps}"
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    children = {p for ps in parents for p in ps}
    out = []
    for i, ps in enumerate(parents):
        msg = f"c{i}\n"
        out.append(f"commit refs/heads/main\nmark :{i + 1}\n"
                   f"author Gen <gen@example.com> {EPOCH + 60 * i} +0000\n"
                   f"committer Gen <gen@example.com> {EPOCH + 60 * i} +0000\n"
                   f"data {len(msg)}\n{msg}")
        if ps:
            out.append(f"from :{ps[0] + 1}\n")
        for p in ps[1:]:
            out.append(f"merge :{p + 1}\n")
        out.append(f"M 644 inline f\ndata {len(str(i))}\n{i}\n\n")
    for i in range(len(parents)):
        if i not in children:
            out.append(f"reset refs/tags/tip-{i}\nfrom :{i + 1}\n\n")
    with tempfile.NamedTemporaryFile("r", suffix=".marks") as marks:
        subprocess.run(["git", "-C", str(path), "fast-import", "--quiet", f"--export-marks={marks.name}"],
                       input="".join(out), text=True, check=True)
        by_mark = dict(line.split() for line in Path(marks.name).read_text().splitlines())
    git(path, "reset", "-q", "--hard", "main")
    return History(path, parents, [by_mark[f":{i + 1}"] for i in range(len(parents))])


def linear(n: int) -> list[tuple[int, ...]]:
    return [()] + [(i - 1,) for i in range(1, n)]


def with_merges(n: int, seed: int = 1, topic_every: int = 12, topic_len: int = 4) -> list[tuple[int, ...]]:
    """A mainline with short topic branches forked from it and merged back, like a kernel tree."""
    rng = random.Random(seed)
    parents: list[tuple[int, ...]] = [()]
    main = 0
    while len(parents) < n:
        i = len(parents)
        if i % topic_every == 0 and n - i > topic_len + 1:
            fork = rng.randint(max(0, main - 5), main) if main else 0
            fork = max(fork, 0)
            tip = fork
            for _ in range(rng.randint(1, topic_len)):
                parents.append((tip,))
                tip = len(parents) - 1
            parents.append((main, tip))  # merge the topic into mainline
        else:
            parents.append((main,))
        main = len(parents) - 1
    return parents[:n]


def random_dag(rng: random.Random, n: int, merge_p: float = 0.25) -> list[tuple[int, ...]]:
    parents: list[tuple[int, ...]] = [()]
    for i in range(1, n):
        p1 = rng.randint(max(0, i - 4), i - 1)  # mostly recent parents: long-ish chains
        if i > 2 and rng.random() < merge_p:
            p2 = rng.randint(0, i - 1)
            if p2 != p1:
                parents.append((p1, p2))
                continue
        parents.append((p1,))
    return parents


_FIRST_BAD = re.compile(r"^([0-9a-f]{40}) is the first bad commit", re.M)
_COULD_BE = re.compile(r"The first bad commit could be any of:\n((?:[0-9a-f]{40}\n?)+)")


@dataclass
class GitRun:
    first_bad: str | None
    could_be: set[str]
    steps: int  # commits git tested (good/bad/skip verdicts after start)


def git_bisect_run(h: History, goods: list[int], bad: int, culprit: int,
                   skip: set[int] = frozenset()) -> GitRun:
    """Plain ``git bisect run`` in the history's repository, with a script that knows the culprit."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "test.sh"
        skips = " ".join(h.shas[i] for i in sorted(skip))
        script.write_text(
            "#!/bin/sh\n"
            "head=$(git rev-parse HEAD)\n"
            f"for s in {skips}; do [ \"$s\" = \"$head\" ] && exit 125; done\n"
            f"git merge-base --is-ancestor {h.shas[culprit]} HEAD && exit 1\n"
            "exit 0\n")
        script.chmod(0o755)
        out = git(h.path, "bisect", "start", h.shas[bad], *[h.shas[g] for g in goods]).stdout
        try:
            if not _FIRST_BAD.search(out):  # done at start: "bisect run" would still test HEAD once
                out += git(h.path, "bisect", "run", str(script), check=False).stdout
            log = git(h.path, "bisect", "log").stdout
        finally:
            git(h.path, "bisect", "reset", check=False)
            git(h.path, "checkout", "-q", "main", check=False)
    steps = len(re.findall(r"^git bisect (good|bad|skip) ", log, re.M))
    m = _FIRST_BAD.search(out)
    could = _COULD_BE.search(out)
    return GitRun(m.group(1) if m else None, set(could.group(1).split()) if could else set(), steps)


@dataclass
class EngineRun:
    result: object  # the final Done / Unresolved step
    tested: list[str]
    built: list[str]


def drive(state, verdict: Callable[[str], str], imaged: set[str], allow_build: bool,
          min_split: float = 0.5, max_steps: int = 500) -> EngineRun:
    """Run the engine to its end with a perfect tester; a Build makes the image exist (no cost here)."""
    from buildbot_kernel.bisect.engine import Build, Test, next_step

    imaged = set(imaged)
    tested: list[str] = []
    built: list[str] = []
    for _ in range(max_steps):
        step = next_step(state, lambda sha: sha if sha in imaged else None, allow_build, min_split)
        if isinstance(step, Build):
            assert step.sha not in imaged and step.sha not in built, f"asked to build {step.sha} twice"
            built.append(step.sha)
            imaged.add(step.sha)
        elif isinstance(step, Test):
            assert step.sha not in tested, f"asked to test {step.sha} twice"
            tested.append(step.sha)
            state.record(step.sha, verdict(step.sha))
        else:
            return EngineRun(step, tested, built)
    raise AssertionError(f"no end after {max_steps} steps")


@dataclass
class RoundsRun:
    result: object  # the final Done / Unresolved step
    rounds: list[list[str]]  # the commits tested side by side, round by round
    built: list[str]


def drive_rounds(state, verdict: Callable[[str], str], imaged: set[str], machines: int, allow_build: bool,
                 min_split: float = 0.5, max_rounds: int = 500, session=None) -> RoundsRun:
    """Run multisection to its end with a perfect tester (through ``session`` when given, which logs);
    a round's builds make their images exist (no cost here)."""
    from buildbot_kernel.bisect.engine import Build
    from buildbot_kernel.bisect.multisect import Round, next_round, record_round

    imaged = set(imaged)
    rounds: list[list[str]] = []
    built: list[str] = []
    tested: set[str] = set()
    for _ in range(max_rounds):
        has_image = lambda sha: sha if sha in imaged else None  # noqa: E731
        step = (session.next_round(has_image, machines, allow_build, min_split) if session
                else next_round(state, has_image, machines, allow_build, min_split))
        if not isinstance(step, Round):
            return RoundsRun(step, rounds, built)
        assert 1 <= len(step.steps) <= machines, step
        for s in step.steps:
            assert s.sha not in tested, f"asked to test {s.sha} twice"
            if isinstance(s, Build):
                assert s.sha not in imaged, f"asked to build {s.sha}, which has an image"
                built.append(s.sha)
                imaged.add(s.sha)
            assert s.sha in imaged, f"asked to test {s.sha} without an image"
            tested.add(s.sha)
        rounds.append(step.shas)
        verdicts = [(sha, verdict(sha)) for sha in step.shas]
        if session:
            session.record_round(verdicts)
        else:
            record_round(state, verdicts)
    raise AssertionError(f"no end after {max_rounds} rounds")
