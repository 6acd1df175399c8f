"""Every git command buildbot-kernel runs itself (not Buildbot's GitPoller), through GitPython.

One environment policy (:func:`git_env`), one error type (:class:`GitError`, carrying git's own reason),
and the few questions the bisect, its mirror clone and the heads check ask:

* :class:`Repo`: resolve a revision, ancestry, ``rev-list --bisect-all`` / ``--bisect`` (git's own output,
  parsed, never re-computed: a bisection here must narrow exactly as ``git bisect`` does), commit info;
* :func:`ls_remote`: a remote's branch heads;
* :func:`update_mirror`: a bare ``--mirror`` clone kept fresh by fetching, with progress lines and a lock
  file beside it so two threads or two processes never write into it at once; it is the host's object
  store, which never deletes an object (:func:`keep_objects`), and other repositories :func:`borrow` it.

Blocking (child processes): code on the Twisted reactor calls these through ``deferToThread``.
Revisions and URLs may come from a form or a settings file: one that starts with ``-`` is refused, and
each is placed after ``--end-of-options`` or ``--`` so git never reads it as an option.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git
from git.cmd import handle_process_output
from git.util import remove_password_if_present

from buildbot_kernel.errors import BuildbotKernelError

# GIT_* variables that say how to reach a remote or how to configure git, not which repository to use:
# kept so an SSH remote works as it does in the operator's shell (keys, agent, proxy command, askpass).
KEEP_GIT_VARS = frozenset({
    "GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "GIT_ASKPASS", "GIT_PROXY_COMMAND",
    "GIT_SSL_CAINFO", "GIT_SSL_CAPATH", "GIT_HTTP_USER_AGENT", "GIT_HTTP_PROXY_AUTHMETHOD",
})
KEEP_GIT_PREFIXES = ("GIT_CONFIG_", "GIT_TRACE")

# one line of ``git rev-list --bisect-all``: "<sha> (<decorations>, dist=N)" or "<sha> (dist=N)"
_BISECT_ALL_RE = re.compile(r"^(?P<sha>[0-9a-f]{40,64})\b.*\bdist=(?P<dist>\d+)\)\s*$")

Progress = Callable[[str], None]


class GitError(BuildbotKernelError, RuntimeError):
    """A git command failed. ``reason`` is git's own last stderr line, without the ``fatal: `` prefix and
    the ``unable to access '<url>': `` part that callers already show; ``stderr`` is all of it."""

    def __init__(self, args: Sequence[str], status: int | None, stderr: str):
        self.command = list(args)
        self.status = status
        self.stderr = stderr
        self.reason = reason_of(stderr, status)
        verb = self.command[2:3] if self.command[:1] == ["-C"] else self.command[:1]
        super().__init__(self.reason if status is None else f"git {' '.join(verb)} failed: {self.reason}")


def reason_of(stderr: str, status: int | None) -> str:
    """git's reason for a failure, in its own words: the last stderr line, minus what the UI already shows.

    After a failed SSH (or other helper) transport git ends with "fatal: Could not read from remote
    repository." and two lines of advice; the transport's own message just before them says what
    went wrong, so that line is the reason.
    """
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip() and ln.strip() not in _ADVICE]
    if len(lines) > 1 and lines[-1] == _NO_READ:
        lines.pop()
    last = (lines or [f"git exited with {status}"])[-1]
    last = re.sub(r"^(fatal|error): ", "", last)
    return re.sub(r"^unable to access '[^']*': ", "", last)


_NO_READ = "fatal: Could not read from remote repository."
_ADVICE = frozenset({"Please make sure you have the correct access rights", "and the repository exists."})


def git_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment (``os.environ`` by default) for a git child process.

    Dropped: every other ``GIT_*`` variable, above all those that would point git at another repository
    (GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE, GIT_OBJECT_DIRECTORY, GIT_COMMON_DIR, ... as set inside a
    git hook or a test harness). Kept: everything else (HOME, SSH_AUTH_SOCK, proxies, PATH) and the
    GIT_* transport and configuration variables in :data:`KEEP_GIT_VARS` / :data:`KEEP_GIT_PREFIXES`.
    GIT_TERMINAL_PROMPT=0: a server has nobody to type a password, so git fails instead of hanging.
    """
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if _kept(k)}
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _kept(name: str) -> bool:
    return not name.startswith("GIT_") or name in KEEP_GIT_VARS or name.startswith(KEEP_GIT_PREFIXES)


# A form's revision field (ForceScheduler ``regex``): empty, or one word that does not start with '-'.
# Buildbot's Git step hands the revision to ``git checkout -f <revision>`` as it is, where
# ``--pathspec-from-file=../../../buildbot.tac`` prints the worker's password into the build log.
REVISION_FIELD = r"(?:[^\s-]\S{0,199})?\Z"


def refuse_option(value: str, what: str = "revision") -> str:
    """``value`` unchanged, or :class:`GitError` when git could read it as an option."""
    if not value or value.startswith("-"):
        raise GitError([what], None, f"fatal: {what} {value!r} is empty or starts with '-'")
    return value


def checked_url(url: str) -> str:
    """A remote URL git may contact: not an option, and not a transport that runs a command (``ext::``)."""
    refuse_option(url, "url")
    try:
        git.Git.check_unsafe_protocols(url)
    except git.UnsafeProtocolError:
        raise GitError(["url"], None, f"fatal: url {url!r} names a transport helper that runs commands "
                                      "('<helper>::'); give an https, ssh, git or file URL") from None
    return url


class PolicyGit(git.Git):
    """GitPython's command wrapper, run in the :func:`git_env` environment.

    GitPython builds a child's environment as ``os.environ`` plus additions; it cannot remove a variable.
    The variables the policy drops are therefore unset in the child with ``env -u`` (names only, values
    never appear on a command line). A ``git.Repo`` subclass that sets it as ``GitCommandWrapperType``
    gets the same policy for the commands GitPython runs on its own.
    """

    def execute(self, command, *args, **kwargs):  # GitPython's signature (overloaded)
        if isinstance(command, (list, tuple)):
            dropped = [k for k in os.environ if not _kept(k)]
            command = [*(["env"] + [a for k in dropped for a in ("-u", k)] if dropped else []), *command]
        kwargs["env"] = {**git_env(), **(kwargs.get("env") or {})}
        return super().execute(command, *args, **kwargs)


def run(args: Sequence[str], *, check: bool = True, timeout: float | None = None) -> tuple[int, str, str]:
    """``git <args>`` -> (status, stdout, stderr); :class:`GitError` on failure when ``check``."""
    cmd = [PolicyGit.GIT_PYTHON_GIT_EXECUTABLE or "git", *args]
    try:
        status, out, err = PolicyGit().execute(cmd, with_extended_output=True, with_exceptions=False,
                                               strip_newline_in_stdout=False, kill_after_timeout=timeout)
    except git.GitCommandNotFound as e:
        raise GitError(args, None, f"fatal: cannot run git: {e}") from None
    if check and status != 0:
        raise GitError(args, status, err)
    return status, out, err


@dataclass(frozen=True)
class Candidate:
    """A commit that may still be the first bad one; ``dist`` is git's split quality (higher = better):
    min(ancestors in range, non-ancestors in range), as ``rev-list --bisect-all`` prints it."""

    sha: str
    dist: int


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    subject: str
    author: str
    date: str  # committer date, ISO 8601 strict


class Repo:
    """A git repository on disk (a work tree or a bare clone), asked through ``git -C <path>``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def run(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        return run(["-C", str(self.path), *args], check=check)

    def is_repository(self) -> bool:
        return self.path.is_dir() and self.run("rev-parse", "--git-dir", check=False)[0] == 0

    def resolve(self, rev: str) -> str | None:
        """Full sha of the commit ``rev`` names, or None when it names none (or would be an option)."""
        if not rev or rev.startswith("-"):
            return None
        status, out, _ = self.run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
                                  check=False)
        return out.strip() if status == 0 and out.strip() else None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """True when ``ancestor`` is reachable from ``descendant`` (a commit is its own ancestor)."""
        args = ("merge-base", "--is-ancestor", "--end-of-options", refuse_option(ancestor),
                refuse_option(descendant))
        status, _, err = self.run(*args, check=False)
        if status not in (0, 1):
            raise GitError(args, status, err)
        return status == 0

    def _range(self, bad: str, goods: Sequence[str]) -> list[str]:
        return [refuse_option(bad), *[f"^{refuse_option(g)}" for g in goods], "--"]

    def bisect_all(self, bad: str, goods: Sequence[str]) -> list[Candidate]:
        """Every commit reachable from ``bad`` and from no good, best split first (git's own order)."""
        out = self.run("rev-list", "--bisect-all", *self._range(bad, goods))[1]
        candidates = []
        for line in out.splitlines():
            m = _BISECT_ALL_RE.match(line)
            if not m:
                raise GitError(["rev-list", "--bisect-all"], 0, f"unexpected output line: {line!r}")
            candidates.append(Candidate(m["sha"], int(m["dist"])))
        return candidates

    def has_bisect_refs(self) -> bool:
        """A ``git bisect`` in progress here (its refs would leak into ``rev-list --bisect``)."""
        return bool(self.run("for-each-ref", "--count=1", "refs/bisect/")[1].strip())

    def bisect_pick(self, bad: str, goods: Sequence[str]) -> str:
        """The commit ``git bisect`` itself would check out next for this range (no skips).

        ``rev-list --bisect`` stops at the first exactly-halfway commit in walk order, which is how
        ``git bisect`` chooses among equally good splits; ``--bisect-all`` alone sorts ties by sha. It
        also silently adds refs/bisect/* to the range, so callers must not use it while a ``git
        bisect`` is in progress in the same repository (see :meth:`has_bisect_refs`).
        """
        return self.run("rev-list", "--bisect", *self._range(bad, goods))[1].strip()

    def range_commits(self, bad: str, goods: Sequence[str]) -> tuple[str, ...]:
        """The commits reachable from ``bad`` and from no good, oldest first (``bad`` last)."""
        return tuple(self.run("rev-list", "--topo-order", "--reverse", *self._range(bad, goods))[1].split())

    def range_parents(self, bad: str, goods: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
        """The range's commits with their parents (some may lie outside it), parents before children."""
        out = self.run("rev-list", "--topo-order", "--reverse", "--parents", *self._range(bad, goods))[1]
        return [(words[0], tuple(words[1:])) for words in (line.split() for line in out.splitlines()) if words]

    def commit_info(self, sha: str) -> CommitInfo:
        out = self.run("show", "-s", "--format=%H%x00%s%x00%an <%ae>%x00%cI", "--end-of-options",
                       refuse_option(sha), "--")[1]
        full, subject, author, date = out.rstrip("\n").split("\x00")
        return CommitInfo(full, subject, author, date)

    def subject(self, sha: str) -> str:
        return self.commit_info(sha).subject

    def history_order(self, head: str, shas: Iterable[str]) -> list[str] | None:
        """Those of ``shas`` that are in ``head``'s history, newest first (``git rev-list --topo-order``),
        or None when ``head`` is not a commit of this repository (not fetched yet).

        The walk is streamed and stops once every sha was seen: images are of recent commits, so a
        kernel-sized history is rarely walked to its root (with a commit-graph, git streams at once)."""
        if self.resolve(head) != head:
            return None
        wanted = {s for s in shas if s}
        found: list[str] = []
        cmd = [PolicyGit.GIT_PYTHON_GIT_EXECUTABLE or "git", "-C", str(self.path), "rev-list", "--topo-order",
               "--end-of-options", refuse_option(head), "--"]
        proc = PolicyGit().execute(cmd, as_process=True)
        try:
            for line in proc.proc.stdout:
                sha = line.strip().decode("ascii", "replace")
                if sha in wanted:
                    found.append(sha)
                    if len(found) == len(wanted):
                        break
        finally:
            proc.proc.kill()
            proc.proc.wait()
        return found


def ls_remote(url: str, refs: Sequence[str] = (), timeout: float = 300) -> str:
    """``git ls-remote -- <url> <refs>``'s output (``<sha>\\t<ref>`` lines); :class:`GitError` with git's
    reason when the remote cannot be reached or read."""
    return run(["ls-remote", "--", checked_url(url), *refs], timeout=timeout)[1]


# ---- the mirror clone ------------------------------------------------------------------------------


class _ProgressLines(git.RemoteProgress):
    """git's progress meter as a few whole lines: each stage's first line, every tenth, and its end.
    ``tail`` keeps git's last stderr lines in order, for the reason of a failure."""

    def __init__(self, report: Progress):
        super().__init__()
        self._report = report
        self._tenths: dict[int, int] = {}
        self.tail: deque[str] = deque(maxlen=20)

    def new_message_handler(self) -> Callable[[str], None]:
        parse = super().new_message_handler()

        def handler(line: str) -> None:
            self.tail.append(line.rstrip())
            parse(line)

        return handler

    def update(self, op_code, cur_count, max_count=None, message=""):  # GitPython's signature
        op = op_code & self.OP_MASK
        tenth = int(10 * float(cur_count) / float(max_count)) if max_count else 0
        if op_code & (self.BEGIN | self.END) or self._tenths.get(op, 0) < tenth < 10:
            self._tenths[op] = tenth
            self._report((self._cur_line or "").strip())


@contextmanager
def path_lock(path: Path, waiting: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold ``<path>.lock`` (``flock``): one writer per mirror, across threads and processes alike.
    ``waiting`` is called once when someone else holds it (the wait may be a whole clone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with fd_lock(os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644),
                 waiting):
        yield


@contextmanager
def fd_lock(fd: int, waiting: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold ``flock`` on the open file ``fd`` for the block, then close it (which releases the lock): for
    a lock file its caller opened itself (one in the image tree, never through a symlink)."""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def update_mirror(path: str | os.PathLike, url: str, progress: Progress | None = None,
                  timeout: float = 3600, then: Callable[[Path], None] | None = None,
                  seed: str | os.PathLike | None = None) -> Path:
    """Clone ``url`` as a bare mirror at ``path``, or fetch into the mirror already there (pruned, and from
    ``url`` even when it changed since the clone). ``progress`` gets git's progress as lines. ``then(path)``
    runs after the fetch, still holding the mirror's lock (e.g. to let others borrow its objects). A first
    clone copies what it can from ``seed`` (a local repository of the same history, when it exists)
    instead of fetching it again (``--reference-if-able`` + ``--dissociate``)."""
    path, url = Path(path), checked_url(url)
    report = progress or (lambda line: None)
    shown = remove_password_if_present([url])[0]
    with path_lock(path, lambda: report(f"waiting for another fetch into {path} to finish")):
        if (path / "HEAD").is_file():
            report(f"fetching {shown} into the mirror {path}")
            mirror = ["-C", str(path), "config", "remote.origin.url"]
            if run(mirror, check=False)[1].strip() != url:
                run([*mirror, url])
            _with_progress(["-C", str(path), "fetch", "--prune", "--progress", "origin"], report, timeout)
        else:
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            report(f"cloning {shown} into the mirror {path} (first use: a full clone of every ref)")
            local = ["--reference-if-able", str(seed), "--dissociate"] if seed and Path(seed, "HEAD").is_file() else []
            _with_progress(["clone", "--mirror", "--progress", *local, "--", url, str(tmp)], report, timeout)
            os.replace(tmp, path)
        keep_objects(path)
        if then is not None:
            then(path)
        report("mirror up to date")
    return path


# ---- one object store per host --------------------------------------------------------------------

# The store's objects are borrowed (git alternates) by repositories it cannot see the refs of, so it must
# never delete an object, reachable from its own refs or not: a gc there repacks, it never prunes.
STORE_CONFIG = {"gc.pruneExpire": "never", "gc.worktreePruneExpire": "never"}


def keep_objects(store: str | os.PathLike) -> None:
    """Configure a repository others borrow from so that no gc of it ever deletes an object."""
    for key, value in STORE_CONFIG.items():
        run(["-C", str(store), "config", key, value])


def alternates(repo: str | os.PathLike) -> list[str]:
    """The object directories ``repo`` borrows from (its ``objects/info/alternates``)."""
    path = _objects_dir(Path(repo)) / "info" / "alternates"
    try:
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    except FileNotFoundError:
        return []


def borrow(repo: str | os.PathLike, store: str | os.PathLike) -> bool:
    """Make ``repo`` borrow ``store``'s objects and drop its own copies of them; True when newly done.

    The alternates line is added once, then ``git repack -a -d -l`` rewrites ``repo``'s packs without the
    objects the store has (``-l``: objects reachable through an alternate are not packed). A later gc in
    ``repo`` keeps it that way (gc repacks with ``-l`` too), and whatever ``repo`` prunes is its own.
    """
    repo, store_objects = Path(repo), _objects_dir(Path(store)).resolve()
    if str(store_objects) in alternates(repo):
        return False
    if not store_objects.is_dir():
        raise GitError(["borrow"], None, f"fatal: {store} has no object directory to borrow from")
    info = _objects_dir(repo) / "info"
    info.mkdir(parents=True, exist_ok=True)
    with open(info / "alternates", "a") as f:
        f.write(f"{store_objects}\n")
    run(["-C", str(repo), "repack", "-a", "-d", "-l", "-q"])
    return True


def _objects_dir(repo: Path) -> Path:
    return repo / ".git" / "objects" if (repo / ".git").is_dir() else repo / "objects"


def _with_progress(args: list[str], progress: Progress, timeout: float) -> None:
    """Run a fetch or clone, handing its stderr progress to ``progress``; :class:`GitError` on failure."""
    meter = _ProgressLines(progress)
    cmd = [PolicyGit.GIT_PYTHON_GIT_EXECUTABLE or "git", *args]
    try:
        proc = PolicyGit().execute(cmd, as_process=True, universal_newlines=True)
    except git.GitCommandNotFound as e:
        raise GitError(args, None, f"fatal: cannot run git: {e}") from None
    handle_process_output(proc, None, meter.new_message_handler(), None, decode_streams=False,
                          kill_after_timeout=timeout)
    status = proc.proc.wait()
    timed_out = getattr(proc, "_timeout_error", None)
    if status != 0 or timed_out:
        raise GitError(args, status, "\n".join([*meter.tail, *([timed_out] if timed_out else [])]))
