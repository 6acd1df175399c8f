"""What each notification says (pure: plain dicts in, :class:`Mail` out).

The culprit mail is a contract (README.md "Notifications"): a maintainer pastes its trailers into the
fix and replays its bisect log, so its fields and their labels stay as they are. Every value that came
from a commit or a form is flattened to one line before it is shown (:func:`compose.body_line`), so a
crafted subject cannot forge lines such as ``Reported-by:`` in the body.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING

from buildbot_kernel.bisect.engine import BisectInputError
from buildbot_kernel.bisect.log import parse_log
from buildbot_kernel.commitlink import PLACEHOLDER, commit_url
from buildbot_kernel.notify.compose import Mail, body_line, header_text

if TYPE_CHECKING:
    from buildbot_kernel.settings import Build

SHORT = 12
EVENTS = ("build-failed", "regression", "culprit")


def short(sha: object) -> str:
    return str(sha or "")[:SHORT]


def commit_link(web_url: str, sha: object) -> str:
    """The commit's page, or "" where a mail line wants text (see commitlink.commit_url)."""
    return commit_url(web_url if web_url and PLACEHOLDER in web_url else None, sha) or ""


def test_label(request: Mapping) -> str:
    """The named test, or the free-form command (shortened) for a bisect started with one."""
    if request.get("test"):
        return body_line(request["test"], 60)
    return "'" + body_line(request.get("command", ""), 40) + "'"


def is_flaky(result: Mapping) -> bool:
    """The culprit did not reproduce when verified: never report it as a culprit."""
    return result.get("status") == "flaky" or result.get("verified") is False


# --- build-failed ---------------------------------------------------------------------------------
def build_failed_mail(*, repository: str, branch: str, sha: str, failed_step: str, first_error: str,
                      errors_url: str, log_url: str, build_url: str, web_url: str = "",
                      to=()) -> Mail:
    error = body_line(first_error) or "(no compiler error recognised; see the log)"
    link = commit_link(web_url, sha)
    lines = [
        f"The build of {body_line(repository)} {body_line(branch)} at {sha or 'an unknown commit'} failed "
        f"in the {body_line(failed_step)} step.",
        "",
        "First compiler error:",
        f"    {error}",
        "",
        f"errors log: {errors_url or '(none)'}",
        f"full log:   {log_url or '(none)'}",
        f"build:      {build_url}",
    ]
    if link:
        lines.append(f"commit:     {link}")
    what = header_text(first_error, 120) or failed_step
    subject = " ".join(p for p in ("[build]", branch, short(sha), "failed:", what) if p)
    return Mail(subject=subject, body="\n".join(lines) + "\n", to=tuple(to), kind="build-failed")


# --- regression -------------------------------------------------------------------------------------
def parse_regression(prop: object) -> dict | None:
    """The ``regression`` build property (README.md "Regression watch"; a JSON text or an object) in one
    shape: ``{test, branch, repository, tester, bisect, good: {sha, image, image_url}, bad: {...}}``.
    Image URLs may be given as ``url`` or ``image_url``; ``bisect`` is the started bisect's
    ``{"buildset": N, "buildrequests": [...]}``, or a bisect id, or absent."""
    if isinstance(prop, (str, bytes)):
        try:
            prop = json.loads(prop)
        except ValueError:
            return None
    if not isinstance(prop, Mapping) or not prop.get("test") or not prop.get("branch"):
        return None

    def side(name: str) -> dict:
        d = prop.get(name) if isinstance(prop.get(name), Mapping) else {}
        return {"sha": str(d.get("sha") or ""), "image": str(d.get("image") or ""),
                "image_url": str(d.get("image_url") or d.get("url") or "")}

    bisect = prop.get("bisect") or prop.get("bisect_id") or ""
    requests = []
    if isinstance(bisect, Mapping):
        requests = [r for r in bisect.get("buildrequests") or [] if isinstance(r, int) and not isinstance(r, bool)]
        bisect = f"buildset {bisect['buildset']}" if isinstance(bisect.get("buildset"), int) else ""
    return {"test": str(prop["test"]), "branch": str(prop["branch"]), "repository": str(prop.get("repository") or ""),
            "tester": str(prop.get("tester") or ""), "bisect": str(bisect), "bisect_requests": requests,
            "good": side("good"), "bad": side("bad")}


def regression_mail(reg: Mapping, *, build_url: str, web_url: str = "", bisect_url: str = "", to=()) -> Mail:
    """``bisect_url``: where the bisect it started is followed in the web UI ("" when none started)."""
    good, bad = reg["good"], reg["bad"]

    def image_lines(label: str, d: Mapping) -> list[str]:
        out = [f"{label}: {body_line(d['image']) or '(unknown image)'}",
               f"    commit {body_line(d['sha']) or '(unknown)'}"]
        if d.get("image_url"):
            out.append(f"    image  {body_line(d['image_url'])}")
        link = commit_link(web_url, d["sha"])
        if link:
            out.append(f"    link   {link}")
        return out

    tester = f" on {body_line(reg['tester'])}" if reg.get("tester") else ""
    lines = [f"Test {body_line(reg['test'])} passed on an image of {body_line(reg['branch'])} and fails on a "
             f"later one{tester} (re-run, failed again).", ""]
    lines += image_lines("last good image", good) + image_lines("first bad image", bad)
    started = body_line(reg["bisect"]) + (f" {bisect_url}" if bisect_url else "")
    lines += ["", f"bisect: {started.strip() or 'not started'}", f"build:  {build_url}"]
    subject = (f"[regression] {reg['test']} on {reg['branch']}: {bad['image'] or short(bad['sha'])} fails, "
               f"{good['image'] or short(good['sha'])} passed")
    return Mail(subject=subject, body="\n".join(lines) + "\n", to=tuple(to), kind="regression")


# --- bisect results ---------------------------------------------------------------------------------
def bisect_range(request: Mapping, bisect_log: str) -> tuple[list[str], str]:
    """(goods, bad) as commits: the log's ``git bisect start`` line holds them resolved, while the request
    may name a branch that has moved on since."""
    try:
        start = parse_log(bisect_log).start
    except BisectInputError:
        start = []
    if start:
        return list(start[1:]), start[0]
    return [str(g) for g in request.get("good") or []], str(request.get("bad", ""))


def reproducer(request: Mapping, base_url: str, goods: list[str], bad: str) -> str:
    """The command line that repeats the bisect on a person's machine with the same prebuilt images."""
    args = ["buildbot-kernel", "bisect", "--repo", "linux"]
    for g in goods:
        args += ["--good", g]
    args += ["--bad", bad, "--index", base_url.rstrip("/") + "/index.json",
             "--build", str(request.get("build_config", "")), "--run", str(request.get("command", ""))]
    return (f"git clone {shlex.quote(str(request.get('url', '')))} linux\n"
            + " ".join(shlex.quote(a) for a in args))


def _indent(text: str) -> list[str]:
    return ["    " + line for line in text.rstrip("\n").splitlines()] or ["    (empty)"]


def _config_line(build: Build | None, build_name: str) -> str:
    if not build:
        return f"build config {build_name}"
    extra = f" + {', '.join(build.fragments)}" if build.fragments else ""
    cross = f", CROSS_COMPILE={build.cross_compile}" if build.cross_compile else ""
    return f"{build_name}: ARCH={build.arch} {build.config}{extra}{cross}"


def culprit_mail(result: Mapping, *, bisect_log: str, build_url: str, sender: str, base_url: str,
                 web_url: str = "", build: Mapping | None = None, compiler: str = "", to=(), cc=()) -> Mail:
    """The contract mail: a verified first bad commit."""
    req, fb, lg = result["request"], result["first_bad"], result.get("last_good") or {}
    sha = str(fb["sha"])
    test = test_label(req)
    link = commit_link(web_url, sha) or "(no commit link: set [[repository]] web_url)"
    goods, bad = bisect_range(req, bisect_log)
    verified = {True: "yes (the culprit re-tested bad, its parent good)", None: "not verified"}.get(
        result.get("verified"), str(result.get("verified")))
    lines = [
        f"The bisect of {test} on {body_line(req.get('repository'))} {body_line(req.get('branch'))} found the "
        "first bad commit.",
        "",
        f"commit:   {sha}",
        f"subject:  {body_line(fb.get('subject'))}",
        f"author:   {body_line(fb.get('author'))}",
        f"date:     {body_line(fb.get('date'))}",
        f"link:     {link}",
        "",
        f"range:    good {body_line(' '.join(goods))} .. bad {body_line(bad)}",
        f"test:     {test} (mode {body_line(req.get('mode'))}): {body_line(req.get('command'))}",
        f"verified: {verified}",
        f"first bad image: {fb.get('image_url') or '(no image)'}",
        f"last good image: {lg.get('image_url') or '(no image)'} ({short(lg.get('sha'))} "
        f"{body_line(lg.get('subject'))})",
        f"config:   {_config_line(build, str(req.get('build_config', '')))}",
        f"compiler: {body_line(compiler) or '(unknown)'}",
        f"build:    {build_url}",
        f"steps:    {result.get('tests', 0)} tests, {result.get('builds', 0)} builds",
        "",
        "Reproduce it with the same prebuilt images:",
        *_indent(reproducer(req, base_url, goods, bad)),
        "",
        "git bisect log (replay it with `git bisect replay <file>` in a clone):",
        *_indent(bisect_log),
        "",
        f"Reported-by: {body_line(sender)}",
        f"Closes: {build_url}",
    ]
    subject = f"[bisect] {test} on {req.get('branch')}: first bad commit {short(sha)} {fb.get('subject')}"
    return Mail(subject=subject, body="\n".join(lines) + "\n", to=tuple(to), cc=tuple(cc), kind="culprit")


def flaky_mail(result: Mapping, *, bisect_log: str, build_url: str, to=()) -> Mail:
    """A culprit that did not reproduce (status ``flaky``) or could not be verified (``verified: false``):
    said as such, never named as the culprit in the subject, its author not copied."""
    req, fb = result["request"], result.get("first_bad") or {}
    test = test_label(req)
    candidate = f"{fb.get('sha')} ({body_line(fb.get('subject'))})" if fb.get("sha") else "none"
    goods, bad = bisect_range(req, bisect_log)
    if result.get("status") == "flaky":
        what, verdict = "ended as flaky: testing the candidate and its parent again contradicted the bisect", "flaky"
    else:
        what, verdict = "found a candidate that could not be verified", "not verified"
    checks = [f"  {body_line(c.get('role'))} {short(c.get('sha'))}: expected {body_line(c.get('expected'))}, "
              f"tested {body_line(c.get('verdict') or 'nothing')}"
              + (f" ({body_line(c['reason'])})" if c.get("reason") else "")
              for c in result.get("verification") or [] if isinstance(c, Mapping)]
    lines = [
        f"The bisect of {test} on {body_line(req.get('repository'))} {body_line(req.get('branch'))} {what}, "
        "so no culprit is reported.",
        "",
        f"candidate: {candidate}",
        f"reason:    {body_line(result.get('reason')) or '(none given)'}",
        *(["verification:", *checks] if checks else []),
        f"range:     good {body_line(' '.join(goods))} .. bad {body_line(bad)}",
        f"test:      {test}: {body_line(req.get('command'))}",
        f"build:     {build_url}",
        "",
        "git bisect log:",
        *_indent(bisect_log),
    ]
    subject = f"[bisect] {test} on {req.get('branch')}: {verdict}, no culprit reported"
    return Mail(subject=subject, body="\n".join(lines) + "\n", to=tuple(to), kind="flaky")


def bisect_result_mail(result: Mapping, *, build_url: str, to=()) -> Mail:
    """Any other end of a bisect (unresolved, max-steps, aborted), for the person who started it."""
    req = result["request"]
    test = test_label(req)
    status = body_line(result.get("status"), 40)
    cands = [str(c) for c in result.get("candidates") or []]
    lines = [
        f"The bisect of {test} on {body_line(req.get('repository'))} {body_line(req.get('branch'))} ended: "
        f"{status}.",
        "",
        f"reason:     {body_line(result.get('reason')) or '(none given)'}",
        f"candidates: {len(cands)}: {' '.join(short(c) for c in cands[:16])}{' ...' if len(cands) > 16 else ''}",
        f"build:      {build_url}",
    ]
    subject = f"[bisect] {test} on {req.get('branch')}: {status}"
    return Mail(subject=subject, body="\n".join(lines) + "\n", to=tuple(to), kind="bisect-result")
