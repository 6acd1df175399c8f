"""``buildbot-kernel bisect``: find a first bad commit from a maintainer's shell with the server's images.

Like mozregression for kernels: the commits come from the user's own clone (``--repo``), the images
from the server's index.json (``--index``), and the verdicts from a local command (``--run``, exit codes
as for ``git bisect run``). No kernel is built here and no commit without an image is guessed at: the
bisection narrows over commits that have images and ends with the smallest range it can prove.
The last line is ``first bad commit: <sha>`` or ``first bad commit is one of: <sha> <sha> ...``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from buildbot_kernel.bisect.engine import (
    BisectInputError,
    Done,
    Test,
    Unresolved,
    remaining_candidates,
    steps_left_estimate,
)
from buildbot_kernel.bisect.images import ImageError, ImageIndex, fetch_image
from buildbot_kernel.bisect.session import BisectSession
from buildbot_kernel.bisect.tester import (
    TesterAbort,
    TestTimedOut,
    run_test_command,
    tester_env,
    verdict_for_exit,
)
from buildbot_kernel.cli import CommandError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bisect",
        help="find the first bad commit with prebuilt images and a local test command",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--repo", default=".", metavar="DIR", help="your clone holding good and bad (default: .)")
    p.add_argument("--good", action="append", default=[], metavar="REV",
                   help="a revision known to work (repeatable)")
    p.add_argument("--bad", metavar="REV", help="a revision known to fail")
    p.add_argument("--index", required=True, metavar="URL|PATH",
                   help="the image tree: its base URL (http://server:8011/), its index.json URL, or a path")
    p.add_argument("--build", required=True, metavar="NAME", help="build config whose images to test")
    p.add_argument("--run", required=True, metavar="CMD",
                   help="test command: exit 0 good, 125 skip, 1-127 bad, >127 abort; gets BISECT_SHA, "
                        "BISECT_IMAGE, BISECT_IMAGE_URL, BISECT_IMAGE_DIR")
    p.add_argument("--log", metavar="FILE", help="keep the bisect log here (git bisect log format)")
    p.add_argument("--replay", metavar="FILE", help="resume the bisection a log records (appends to it)")
    p.add_argument("--image-dir", metavar="DIR",
                   help="keep downloaded images here (default: a temporary directory, removed at the end)")
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="stop after N tests with the range proven so far")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="kill a test still running after SECONDS (with its whole process group); "
                        "that commit is then skip")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.max_steps is not None and args.max_steps < 1:
        raise CommandError(f"--max-steps: {args.max_steps} is not a positive number of steps")
    if args.replay and (args.good or args.bad):
        raise CommandError("--replay: the log already names good and bad; leave out --good/--bad to resume")
    if not args.replay and not args.bad:
        raise CommandError("--bad: required (a revision that shows the problem), or --replay FILE to resume")
    if not args.replay and not args.good:
        raise CommandError("--good: required (a revision without the problem; repeatable), or --replay FILE")
    if args.timeout is not None and not args.timeout > 0:
        raise CommandError(f"--timeout: {args.timeout:g} is not a positive number of seconds")
    index = _load_index(args.index, args.build)
    session, log_path, temp_log = _open_session(args)
    finished = False
    try:
        image_root = Path(args.image_dir) if args.image_dir else Path(tempfile.mkdtemp(prefix="bisect-images-"))
        try:
            code = _loop(args, session, index, image_root, log_path)
            finished = True
        finally:  # also on an error and on Ctrl-C
            if not args.image_dir:
                shutil.rmtree(image_root, ignore_errors=True)
    finally:
        if temp_log:
            if finished or not session.state.steps_done:  # nothing to resume
                shutil.rmtree(log_path.parent, ignore_errors=True)
            else:
                print(f"bisect log kept for --replay: {log_path}", file=sys.stderr)
    return code


def _load_index(source: str, build: str) -> ImageIndex:
    try:
        index = ImageIndex.load(source)
    except ImageError as e:
        raise CommandError(f"--index: {e}") from None
    for reason in index.skipped:
        print(f"warning: entry left out: {reason}", file=sys.stderr)
    if build not in index.builds():
        have = ", ".join(index.builds()) or "no usable images at all"
        raise CommandError(f"--build: no image in {source} has build config {build!r}; the index has: {have}")
    return index


def _open_session(args) -> tuple[BisectSession, Path, bool]:
    temp_log = False
    try:
        if args.replay:
            log_path = Path(args.log or args.replay)
            if args.log and Path(args.log).resolve() != Path(args.replay).resolve():
                if log_path.exists():
                    raise BisectInputError("log", f"{log_path} exists; resuming writes the log to a new file "
                                           "or back to the --replay file")
                BisectSession.resume(args.repo, args.replay)  # validate before copying anything
                shutil.copyfile(args.replay, log_path)
            session = BisectSession.resume(args.repo, log_path)
        else:
            if args.log:
                log_path = Path(args.log)
            else:
                log_path, temp_log = Path(tempfile.mkdtemp(prefix="bisect-log-")) / "bisect.log", True
            try:
                session = BisectSession.start(args.repo, args.good, args.bad, log_path)
            except BisectInputError:
                if temp_log:
                    shutil.rmtree(log_path.parent, ignore_errors=True)
                raise
    except BisectInputError as e:
        raise CommandError(f"--{e.field}: {e.message}") from None
    return session, log_path, temp_log


def _loop(args, session: BisectSession, index: ImageIndex, image_root: Path, log_path: Path) -> int:
    state = session.state
    has_image = index.has_image_for(args.build)
    tested = 0
    print(f"bisecting {state.bad} with good {' '.join(state.goods)}; log: {log_path}", flush=True)
    while True:
        step = session.next_step(has_image, allow_build=False)
        if isinstance(step, Done):
            info = state.repo.commit_info(step.sha)
            print(f"{info.sha} is the first bad commit\n    {info.subject}\n    {info.author}, {info.date}")
            print(f"first bad commit: {step.sha}")
            return 0
        if isinstance(step, Unresolved) or (args.max_steps is not None and tested >= args.max_steps):
            if isinstance(step, Unresolved):
                shas, reason = step.candidates, step.reason
            else:
                shas = remaining_candidates(state)
                reason = f"stopped after --max-steps {args.max_steps} tests"
            print(f"{reason}:")
            for sha in shas:
                print(f"    {sha} {state.repo.subject(sha)}")
            print("first bad commit is one of: " + " ".join(shas))
            return 0
        assert isinstance(step, Test), step  # no building here, so no Build step
        tested += 1
        n = state.steps_done + 1
        print(f"step {n} of ~{n - 1 + steps_left_estimate(step.candidates_left)}: testing {step.sha} "
              f"({step.image.name}); {step.candidates_left} commits left in range", flush=True)
        try:
            image_dir = fetch_image(step.image, image_root / step.image.name)
        except ImageError as e:
            raise CommandError(f"--index: {e}; verdicts so far are in {log_path}, "
                               "resume with --replay") from None
        env = tester_env(step.sha, step.image.name, step.image.url, image_dir.resolve())
        try:
            status = run_test_command(args.run, env, timeout=args.timeout)
            verdict, how = verdict_for_exit(status), f"exit status {status}"
        except TestTimedOut as e:
            verdict, how = e.verdict, f"{e}, --timeout {args.timeout:g}"
        except TesterAbort as e:
            raise CommandError(f"--run: {e} at {step.sha}; verdicts so far are in {log_path}, "
                               "resume with --replay") from None
        session.record(step.sha, verdict)
        print(f"    {verdict} ({how})", flush=True)
