"""A bisection with its log: state changes and log lines always go together.

Both front ends (the Buildbot builder and the shell command) drive the engine through this, so a
verdict can never be applied without being persisted first, and resuming is one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from buildbot_kernel.bisect.engine import (
    DEFAULT_MIN_SPLIT,
    BisectInputError,
    BisectState,
    Done,
    Prefetch,
    Step,
    next_step,
    prefetch,
    start_bisect,
)
from buildbot_kernel.bisect.log import BisectLog, log_rounds, state_from_log
from buildbot_kernel.bisect.multisect import RoundStep, next_round, round_order
from buildbot_kernel.gitrepo import Repo


class BisectSession:
    def __init__(self, state: BisectState, log: BisectLog, finished: bool = False):
        self.state = state
        self.log = log
        self._finished = finished
        self.rounds = log_rounds(log.path)

    @classmethod
    def start(cls, repo: str | Path | Repo, good: Iterable[str], bad: str,
              log_path: str | Path) -> BisectSession:
        """Validate, then create the log (refusing to overwrite one: that is what resume is for)."""
        log_path = Path(log_path)
        if log_path.exists():
            raise BisectInputError("log", f"{log_path} already exists; resume it with replay, "
                                   "or choose a new file")
        if not log_path.parent.is_dir():
            raise BisectInputError("log", f"directory {log_path.parent} does not exist")
        state = start_bisect(repo, good, bad)
        log = BisectLog(log_path, state.repo.subject)
        log.start(state.bad, state.goods)
        return cls(state, log)

    @classmethod
    def resume(cls, repo: str | Path | Repo, log_path: str | Path) -> BisectSession:
        """Rebuild the state from the log; further events are appended to the same file."""
        state, contents = state_from_log(repo, log_path)
        return cls(state, BisectLog(log_path, state.repo.subject), finished=contents.first_bad is not None)

    def next_step(self, has_image: Callable[[str], Any], allow_build: bool = False,
                  min_split: float = DEFAULT_MIN_SPLIT) -> Step:
        """The engine's next step; a :class:`Done` is written to the log (once) as git does."""
        step = next_step(self.state, has_image, allow_build, min_split)
        if isinstance(step, Done) and not self._finished:
            self.log.first_bad(step.sha)
            self._finished = True
        return step

    def record(self, sha: str, verdict: str) -> None:
        """Persist, then apply: a crash in between replays the verdict rather than losing it."""
        self.state.copy().record(sha, verdict)  # validate before writing anything
        self.log.verdict(sha, verdict)
        self.state.record(sha, verdict)

    def next_round(self, has_image: Callable[[str], Any], machines: int, allow_build: bool = False,
                   min_split: float = DEFAULT_MIN_SPLIT) -> RoundStep:
        """Up to ``machines`` commits to test side by side; a :class:`Done` is logged as in next_step."""
        step = next_round(self.state, has_image, machines, allow_build, min_split)
        if isinstance(step, Done) and not self._finished:
            self.log.first_bad(step.sha)
            self._finished = True
        return step

    def record_round(self, verdicts: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Persist a round's verdicts (one write, in replayable order), then apply them; returns that order."""
        ordered = round_order(self.state, verdicts)
        check = self.state.copy()
        for sha, verdict in ordered:  # validate before writing anything
            check.record(sha, verdict)
        self.rounds += 1
        self.log.round(self.rounds, ordered)
        for sha, verdict in ordered:
            self.state.record(sha, verdict)
        return ordered

    def prefetch(self, sha: str, has_image: Callable[[str], Any],
                 min_split: float = DEFAULT_MIN_SPLIT) -> Prefetch:
        return prefetch(self.state, sha, has_image, min_split)
