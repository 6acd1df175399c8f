"""What the Kernels dashboard shows, computed from plain data (pure: no Buildbot, no Twisted).

The glue in :mod:`buildbot_kernel.master.dashboard` collects the facts (each branch's head as the
poller last saw it, the builders' recent builds, index.json, the bisect directories) and this module
turns them into rows.  Every value here may come from outside (commit subjects, branch names, index
entries, result files): the template escapes text, and URLs are only made from checked parts
(:func:`safe_url`, :func:`buildbot_kernel.commitlink.commit_url`).
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

from buildbot_kernel import jsondepth
from buildbot_kernel.bisect import records
from buildbot_kernel.commitlink import commit_url
from buildbot_kernel.utctime import parse_iso_utc

# Buildbot result codes (buildbot.process.results), named here so this module stays import-light
RESULTS = {0: "success", 1: "warnings", 2: "failure", 3: "skipped", 4: "exception", 5: "retry", 6: "cancelled"}
SUCCESS, SKIPPED = 0, 3
BISECT_STATUS = {"done": "culprit found", "unresolved": "unresolved", "max-steps": "stopped at max_steps",
                 "aborted": "aborted"}
BUILD_LOGS = ("build.log.xz", "build.log")


def safe_url(url: object) -> str | None:
    """``url`` if it is an absolute http(s) URL (a ``javascript:`` link in an index entry is not)."""
    if not isinstance(url, str):
        return None
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def short(sha: object) -> str:
    return sha[:12] if isinstance(sha, str) else ""


def build_revision(build: dict) -> str | None:
    """The commit a build built: kernel-facts' resolved sha, else what was asked for."""
    props = build.get("props") or {}
    for key in ("commit_sha", "got_revision", "revision"):
        if isinstance(props.get(key), str) and props[key]:
            return props[key]
    return None


def is_bisect_build(build: dict) -> bool:
    """An on-demand or ahead build a bisect asked for: it says nothing about the branch's head."""
    return bool((build.get("props") or {}).get("bisect_id"))


def build_link(www: str, build: dict) -> str:
    return f"{www}#/builders/{int(build['builderid'])}/builds/{int(build['number'])}"


def build_state(build: dict | None) -> str:
    if build is None:
        return "not built"
    if not build.get("complete"):
        return "building"
    return RESULTS.get(build.get("results"), "unknown")


def head_build(builds: list[dict], sha: str | None) -> dict | None:
    """The newest build of ``sha`` on the branch builder that really built it (a build that found the
    image already published is only used when there is nothing else)."""
    mine = [b for b in builds if not is_bisect_build(b) and sha and build_revision(b) == sha]
    mine.sort(key=lambda b: b.get("number", 0), reverse=True)
    real = [b for b in mine if b.get("results") != SKIPPED]
    return (real or mine or [None])[0]


def image_links(entry: dict | None) -> dict | None:
    if not isinstance(entry, dict) or not safe_url(entry.get("url")):
        return None
    url = entry["url"] if entry["url"].endswith("/") else entry["url"] + "/"
    files = entry.get("files") if isinstance(entry.get("files"), dict) else {}
    log = next((f for f in BUILD_LOGS if f in files), None)
    return {"name": str(entry.get("name", "")), "url": url, "sha": entry.get("sha"),
            "build_log": url + log if log else None,
            "reproducer": url + "reproducer" if "reproducer" in files else None,
            "tests": test_rows(entry.get("tests"))}


def test_rows(tests: object) -> list[dict]:
    """index.json ``tests``: ``{"<test>": {"result", "date", "machine", "log_url"}}`` (when present)."""
    if not isinstance(tests, dict):
        return []
    out = []
    for name, t in sorted(tests.items()):
        if isinstance(t, dict):
            out.append({"name": str(name), "result": str(t.get("result", "?")), "date": str(t.get("date", "")),
                        "machine": str(t.get("machine", "")), "log_url": safe_url(t.get("log_url"))})
    return out


def newest_image(images: list[dict], branch: str, head: str | None) -> dict | None:
    """The image to show for a branch: the one marked head, else the head's, else the index's first."""
    mine = [e for e in images if isinstance(e, dict) and e.get("branch") == branch]
    for pick in (lambda e: e.get("head") is True, lambda e: head and e.get("sha") == head, lambda e: True):
        found = next((e for e in mine if pick(e)), None)
        if found is not None:
            return found
    return None


def branch_rows(branches: list[dict], heads: dict, builds: dict, images: list[dict], errors: dict,
                www: str) -> list[dict]:
    """One row per configured branch, also when its head never built (no image, a failed build).

    ``heads``: (repository URL, branch) -> sha as the poller last saw it; ``builds``: builder name ->
    recent builds (dicts with ``props``); ``errors``: buildid -> (first error text, link to its log)."""
    rows = []
    for b in branches:
        mine = builds.get(b["builder"], [])
        head = heads.get((b["url"], b["branch"]))
        if not head:  # the poller has not run yet: the newest build that was not a bisect's
            own = sorted((x for x in mine if not is_bisect_build(x)), key=lambda x: x.get("number", 0))
            head = build_revision(own[-1]) if own else None
        build = head_build(mine, head)
        entry = newest_image(images, b["branch"], head)
        head_entry = next((e for e in images if isinstance(e, dict) and head and e.get("sha") == head
                           and e.get("branch") == b["branch"]), None)
        subject = (head_entry or {}).get("subject") or ((build or {}).get("props") or {}).get("commit_subject")
        error, error_link = errors.get((build or {}).get("buildid"), (None, None))
        rows.append({
            "repository": b["repository"], "branch": b["branch"], "builder": b["builder"],
            "head": head, "head_short": short(head), "head_url": commit_url(b.get("web_url"), head),
            "subject": subject if isinstance(subject, str) else "",
            "state": build_state(build), "build_url": build_link(www, build) if build else None,
            "build_text": (build or {}).get("state_string", ""),
            "error": error, "error_url": error_link,
            "image": image_links(entry), "image_is_head": bool(entry and head and entry.get("sha") == head),
        })
    return rows


def _read_json(path: Path):
    try:
        return jsondepth.loads(path.read_bytes(), path.name)  # the dashboard shows what it can, never raises
    except (OSError, ValueError):
        return None


def _rev(text: object, web_url: str | None) -> dict:
    """A revision as typed (a sha, a tag, a branch): shortened and linked when it is a sha."""
    text = text if isinstance(text, str) else ""
    url = commit_url(web_url, text) if len(text) >= 12 else None
    return {"text": short(text) if url or len(text) == 40 else text, "url": url}


def bisect_rows(state_dir: Path, images_by_name: dict, bisect_builds: list[dict], web_urls: dict, www: str,
                here: str, limit: int = 20) -> list[dict]:
    """Newest first: every bisect directory with a request (running ones too), as result.json says.

    result.json (bisect/report.py): ``request`` {good: [...], bad, branch, url, ...}, ``status``,
    ``first_bad`` {sha, subject, author, date, image, image_url}, ``candidates``, ``reason``,
    ``last_good``, ``steps`` [{n, round, sha, image, verdict, tester, started, seconds, build}], ``tests``, ``builds``,
    ``started``, ``finished``."""
    root = Path(state_dir) / records.BISECTS
    try:
        dirs = [d for d in root.iterdir() if (d / records.REQUEST).is_file()]
    except OSError:
        return []
    dirs.sort(key=lambda d: d.name, reverse=True)  # ids start with the UTC time the bisect was asked for
    by_id = {}
    for b in sorted(bisect_builds, key=lambda b: b.get("number", 0)):
        bid = (b.get("props") or {}).get("bisect_id")
        if isinstance(bid, str):
            by_id[bid] = b
    rows = []
    for d in dirs[:limit]:
        try:
            bdir = records.BisectDir(d.parent.parent, d.name)
        except ValueError:
            continue
        result = _read_json(bdir.file(records.RESULT))
        result = result if isinstance(result, dict) else None
        request = (result or {}).get("request") or _read_json(bdir.file(records.REQUEST)) or {}
        request = request if isinstance(request, dict) else {}
        steps = (result or {}).get("steps") if result else bdir.steps()
        steps = [s for s in steps or [] if isinstance(s, dict)]
        web_url = web_urls.get(request.get("url"))
        goods = request.get("good") if isinstance(request.get("good"), list) else [request.get("good")]
        first_bad = (result or {}).get("first_bad") if isinstance((result or {}).get("first_bad"), dict) else None
        last_good = (result or {}).get("last_good") if isinstance((result or {}).get("last_good"), dict) else None
        build = by_id.get(bdir.id)
        images = []
        for label, ref in (("first bad", first_bad), ("last good", last_good)):
            if ref and safe_url(ref.get("image_url")):
                images.append({"label": f"{label}: {ref.get('image')}", "url": ref["image_url"]})
        step_rows = []
        for s in steps:
            entry = images_by_name.get(s.get("image"))
            step_rows.append({"n": s.get("n"), "sha": short(s.get("sha")), "url": commit_url(web_url, s.get("sha")),
                              "verdict": str(s.get("verdict", "")), "image": s.get("image"),
                              "image_url": safe_url((entry or {}).get("url")),
                              "started": s.get("started"), "seconds": s.get("seconds"),
                              "built": bool(s.get("build")), "round": s.get("round", s.get("n")),
                              "tester": str(s.get("tester") or ""),
                              "test_url": safe_url(s.get("test_build_url") or s.get("build_url"))})
        status = (result or {}).get("status")
        rows.append({
            "id": bdir.id, "branch": str(request.get("branch", "")),
            "good": [_rev(g, web_url) for g in goods if g], "bad": _rev(request.get("bad"), web_url),
            "status": status or "running", "status_text": BISECT_STATUS.get(status, status or "running"),
            "culprit": {"sha": first_bad.get("sha"), "short": short(first_bad.get("sha")),
                        "subject": str(first_bad.get("subject", "")), "author": str(first_bad.get("author", "")),
                        "url": commit_url(web_url, first_bad.get("sha"))} if first_bad else None,
            "candidates": [_rev(c, web_url) for c in ((result or {}).get("candidates") or [])[:8]]
            if not first_bad else [],
            "candidates_total": len((result or {}).get("candidates") or []),
            "reason": str((result or {}).get("reason") or ""),
            "tests": (result or {}).get("tests", sum(1 for s in steps if s.get("image"))),
            "builds": (result or {}).get("builds", sum(1 for s in steps if s.get("build"))),
            "started": (result or {}).get("started") or (steps[0].get("started") if steps else None),
            "finished": (result or {}).get("finished"),
            "steps": step_rows, "images": images, "rounds": len({r["round"] for r in step_rows}),
            "build_url": build_link(www, build) if build else None,
            "result_url": f"{here}bisects/{bdir.id}/result.json" if result else None,
            "log_url": f"{here}bisects/{bdir.id}/bisect.log" if bdir.file(records.LOG).is_file() else None,
        })
    return rows


def build_durations(branches: list[dict], builds: dict) -> dict[str, list[tuple[datetime, float]]]:
    """Branch -> (finished, minutes) of its branch builder's finished builds that compiled something."""
    out = {}
    for b in branches:
        points = []
        for x in builds.get(b["builder"], []):
            if is_bisect_build(x) or not x.get("complete_at") or not x.get("started_at"):
                continue
            if x.get("results") == SKIPPED:
                continue
            points.append((datetime.fromtimestamp(x["complete_at"], tz=UTC),
                           round((x["complete_at"] - x["started_at"]) / 60, 2)))
        out[b["branch"]] = sorted(points)
    return out


def bisect_timelines(rows: list[dict], limit: int = 6) -> list[tuple[str, list[tuple[float, int]]]]:
    """Per bisect: (minutes since it started, step number) at the end of each step."""
    out = []
    for r in rows[:limit]:
        t0 = parse_iso_utc(r.get("started"))
        points = []
        for s in r["steps"]:
            start = parse_iso_utc(s.get("started"))
            if t0 is None or start is None or not isinstance(s.get("seconds"), int | float):
                continue
            points.append((round(((start - t0).total_seconds() + s["seconds"]) / 60, 2), s.get("n") or 0))
        if points:
            out.append((f"{r['id']} ({r['branch']})", [(0.0, 0), *points]))
    return out
