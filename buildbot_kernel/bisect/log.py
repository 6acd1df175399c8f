"""The bisect log, in ``git bisect log`` format, so a maintainer can ``git bisect replay`` it.

It is also our own record for resuming: every event is appended and fsynced before the bisection moves
on, so a crash (or a master restart) loses at most the step that was running, and reading the file back
rebuilds the state without repeating a finished step. The lines are the ones git writes::

    # bad: [<sha>] <subject>
    # good: [<sha>] <subject>
    git bisect start '<bad>' '<good>'...
    # good: [<sha>] <subject>
    git bisect good <sha>
    # skip: [<sha>] <subject>
    git bisect skip <sha>
    # round 3: 2 commits tested side by side
    # good: [<sha>] <subject>
    git bisect good <sha>
    # bad: [<sha>] <subject>
    git bisect bad <sha>
    # first bad commit: [<sha>] <subject>

Replay only reads the ``git bisect ...`` lines; the comments are for people. A multisection round
(several commits tested at once, :mod:`buildbot_kernel.bisect.multisect`) is its verdicts in an order
git accepts: goods, skips, then bads, the one git must keep last.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from buildbot_kernel.bisect.engine import BAD, GOOD, SKIP, BisectInputError, BisectState, start_bisect
from buildbot_kernel.gitrepo import Repo

# git's alternative terms for the same verdicts (``git bisect start --term-old``... is refused below)
_TERMS = {GOOD: GOOD, "old": GOOD, BAD: BAD, "new": BAD, SKIP: SKIP}


def sq_quote(word: str) -> str:
    """Quote like git's ``sq_quote``: inside single quotes, a ``'`` becomes ``'\\''``."""
    return "'" + word.replace("'", "'\\''") + "'"


class BisectLog:
    """Append-only writer; each call is one ``write`` + ``fsync`` of complete lines."""

    def __init__(self, path: str | Path, subject: Callable[[str], str]):
        self.path = Path(path)
        self._subject = subject

    def start(self, bad: str, goods: list[str]) -> None:
        lines = [self._comment(BAD, bad)] + [self._comment(GOOD, g) for g in goods]
        lines.append("git bisect start " + " ".join(sq_quote(r) for r in [bad, *goods]))
        self._append(lines, new_file=True)

    def verdict(self, sha: str, verdict: str) -> None:
        if verdict not in (GOOD, BAD, SKIP):
            raise ValueError(f"verdict {verdict!r} is not good, bad or skip")
        self._append([self._comment(verdict, sha), f"git bisect {verdict} {sha}"])

    def round(self, number: int, verdicts: list[tuple[str, str]]) -> None:
        """A multisection round's verdicts in one write, in the order :func:`multisect.round_order` gives
        (goods, skips, bads: the bad git must keep last), under a ``# round N`` comment for people."""
        lines = [f"# round {number}: {len(verdicts)} commits tested side by side"]
        for sha, verdict in verdicts:
            if verdict not in (GOOD, BAD, SKIP):
                raise ValueError(f"verdict {verdict!r} is not good, bad or skip")
            lines += [self._comment(verdict, sha), f"git bisect {verdict} {sha}"]
        self._append(lines)

    def first_bad(self, sha: str) -> None:
        self._append([self._comment("first bad commit", sha)])

    def _comment(self, label: str, sha: str) -> str:
        subject = " ".join(self._subject(sha).split())  # one line, whatever the subject holds
        return f"# {label}: [{sha}] {subject}"

    def _append(self, lines: list[str], new_file: bool = False) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if new_file else 0)
        fd = os.open(self.path, flags, 0o644)
        try:
            os.write(fd, ("\n".join(lines) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new_file:  # the directory entry too, or a crash may lose the file itself
            dfd = os.open(self.path.parent if str(self.path.parent) else ".", os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def log_rounds(path: str | Path) -> int:
    """How many multisection rounds a log holds (to number the next one after a resume)."""
    try:
        return sum(1 for line in Path(path).read_text().splitlines() if line.startswith("# round "))
    except FileNotFoundError:
        return 0


@dataclass
class LogContents:
    """What a bisect log says, revisions as written (names or shas)."""

    start: list[str] = field(default_factory=list)  # bad first, then goods
    events: list[tuple[str, str]] = field(default_factory=list)  # (verdict, rev)
    first_bad: str | None = None


def parse_log(text: str, source: str = "bisect log") -> LogContents:
    """Read the ``git bisect`` lines back; a last line without its newline (a torn write) is ignored."""
    lines = text.split("\n")
    if lines and lines[-1] != "":
        lines = lines[:-1]  # not terminated: the write of that line never completed
    out = LogContents()
    started = False
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if line.startswith("# first bad commit: ["):
            out.first_bad = line.split("[", 1)[1].split("]", 1)[0]
            continue
        if not line or line.startswith("#"):
            continue
        words = _split(line, source, n)
        if words[:2] == ["git", "bisect"]:
            words = words[2:]
        elif words[:1] == ["git-bisect"]:
            words = words[1:]
        else:
            raise BisectInputError("replay", f"{source} line {n}: not a git bisect command: {line!r}")
        if not words:
            raise BisectInputError("replay", f"{source} line {n}: git bisect without a command")
        cmd, args = words[0], words[1:]
        if cmd == "start":
            if started:
                raise BisectInputError("replay", f"{source} line {n}: a second 'git bisect start'")
            out.start = _start_args(args, source, n)
            started = True
        elif cmd in _TERMS:
            if not started:
                raise BisectInputError("replay", f"{source} line {n}: {cmd} before 'git bisect start'")
            if any(a.startswith("-") or ".." in a for a in args):
                raise BisectInputError("replay", f"{source} line {n}: options and ranges are not supported")
            for rev in args or ["HEAD"]:
                out.events.append((_TERMS[cmd], rev))
        elif cmd in ("log", "visualize", "view", "terms"):
            continue
        else:
            raise BisectInputError("replay", f"{source} line {n}: 'git bisect {cmd}' is not supported here")
    if not started:
        raise BisectInputError("replay", f"{source} has no 'git bisect start' line")
    return out


def state_from_log(repo: str | Path | Repo, path: str | Path) -> tuple[BisectState, LogContents]:
    """Rebuild the state a log describes (validating it like fresh input), for resuming."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise BisectInputError("replay", f"cannot read {path}: {e.strerror}") from None
    contents = parse_log(text, str(path))
    repo = repo if isinstance(repo, Repo) else Repo(repo)
    bad, goods = (contents.start[0] if contents.start else None), contents.start[1:]
    events = list(contents.events)
    if bad is None:  # "git bisect start" alone: the first bad / good events name them
        bad = next((rev for v, rev in events if v == BAD), None)
        if bad is None:
            raise BisectInputError("replay", f"{path} never names a bad revision")
    if not goods:
        goods = [rev for v, rev in events if v == GOOD][:1]
    state = start_bisect(repo, goods, bad)
    for verdict, rev in events:
        sha = repo.resolve(rev)
        if sha is None:
            raise BisectInputError("replay", f"{path}: {rev!r} names no commit in {repo.path}")
        state.record(sha, verdict)
    return state, contents


def _split(line: str, source: str, n: int) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as e:
        raise BisectInputError("replay", f"{source} line {n}: {e}") from None


def _start_args(args: list[str], source: str, n: int) -> list[str]:
    revs = []
    for i, a in enumerate(args):
        if a == "--":
            if args[i + 1:]:
                raise BisectInputError("replay", f"{source} line {n}: path-limited bisection is unsupported")
            break
        if a in ("--no-checkout",):
            continue
        if a.startswith("-"):
            raise BisectInputError("replay", f"{source} line {n}: 'git bisect start {a}' is not supported")
        revs.append(a)
    return revs
