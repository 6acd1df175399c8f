"""Texts and the result document of a bisect, as the builder shows and stores them (pure).

One Buildbot step per bisect step reads like ``step 3/~7: test 1a2b3c4d5e6f (image X): bad``; the build
summary names the culprit; result.json holds every step with its timings, so a script can read what
a person reads in the UI.
"""

from __future__ import annotations

from buildbot_kernel.bisect.engine import steps_left_estimate
from buildbot_kernel.utctime import iso_utc

SHORT = 12

DONE, UNRESOLVED, MAX_STEPS, ABORTED = "done", "unresolved", "max-steps", "aborted"
FLAKY = "flaky"  # the culprit's verification disagreed with the bisect: no culprit is reported


def short(sha: str) -> str:
    return sha[:SHORT]


def step_title(n: int, candidates_left: int, action: str, sha: str, image: str | None = None,
               outcome: str | None = None) -> str:
    """``step n/~m: <action> <sha> (image X): <outcome>``; m is n-1 plus git's estimate of steps left."""
    about = n - 1 + max(1, steps_left_estimate(candidates_left))
    text = f"step {n}/~{about}: {action} {short(sha)}"
    if image:
        text += f" (image {image})"
    text += f", {candidates_left} candidates left" if outcome is None else f": {outcome}"
    return text


def verdicts_line(steps: list[dict]) -> str:
    """``good 1a2b3c, bad 4d5e6f, skip ...``: the verdicts so far, oldest first."""
    return ", ".join(f"{s['verdict']} {short(s['sha'])}" for s in steps if s.get("verdict"))


def culprit_summary(info: dict) -> str:
    return f"first bad commit {short(info['sha'])}: {info['subject']} ({info['author']}, {info['date']})"


def unresolved_summary(candidates: list[str], reason: str) -> str:
    shown = " ".join(short(s) for s in candidates[:8]) + (" ..." if len(candidates) > 8 else "")
    return f"first bad commit is one of {len(candidates)}: {shown} ({reason})"


def verification_outcome(checks: list[dict]) -> tuple[bool, str]:
    """(verified, why not) for the culprit's re-test and its parent's: each check has ``expected`` and
    ``verdict`` (good / bad / skip, or None when it could not run).  The caller turns a contradiction
    (good where bad was expected or the reverse) into :data:`FLAKY`; a skip or a missing image leaves the
    culprit unverified but standing."""
    why = [f"{c['role']} {short(c['sha'])} tested {c['verdict'] or 'nothing'} "
           f"({c.get('reason') or 'expected ' + c['expected']})" for c in checks if c["verdict"] != c["expected"]]
    return not why, "; ".join(why)


def is_contradiction(checks: list[dict]) -> bool:
    return any(c["verdict"] in ("good", "bad") and c["verdict"] != c["expected"] for c in checks)


def rounds(steps: list[dict]) -> list[dict]:
    """The steps grouped by round (a one-machine bisect: one step per round), in order."""
    out: dict = {}
    for s in steps:
        r = out.setdefault(s.get("round", s.get("n")), {"round": s.get("round", s.get("n")), "candidates": []})
        r["candidates"].append({"sha": s.get("sha"), "verdict": s.get("verdict"), "image": s.get("image"),
                                "tester": s.get("tester")})
    return list(out.values())


def round_summary(r: dict) -> str:
    """``round 2: 3 candidates: 1a2b3c4d5e6f good, ...``"""
    n = len(r["candidates"])
    return (f"round {r['round']}: {n} candidate{'s' if n != 1 else ''}: "
            + ", ".join(f"{short(c['sha'] or '')} {c['verdict'] or 'untested'}" for c in r["candidates"]))


def now_iso(t: float | None = None) -> str:
    """The bisect records' time stamps (the one format: :func:`buildbot_kernel.utctime.iso_utc`)."""
    return iso_utc(t)


def result_document(ident: str, request: dict, status: str, steps: list[dict], *, first_bad: dict | None = None,
                    candidates: list[str] | None = None, reason: str = "", last_good: dict | None = None,
                    started: float | None = None, finished: float | None = None,
                    verification: list[dict] | None = None, built: list[str] = (),
                    machines: list[str] = ()) -> dict:
    """result.json (schema 1): ``status`` is done / unresolved / max-steps / aborted / flaky;
    ``verified`` says whether a found culprit was re-tested bad and its parent good (docs/bisect.md); it is
    null when the bisect found none to verify.  ``builds`` counts every commit built for the bisect: on
    demand, ahead of a verdict (``steps[].ahead``) or for the verification (``built``); ``rounds`` groups
    the steps tested side by side; ``machines`` names the class's machines that tested."""
    builds = {s["build"]["sha"] for s in steps if isinstance(s.get("build"), dict) and s["build"].get("sha")}
    builds |= {sha for s in steps for sha in (s.get("ahead") or []) if isinstance(sha, str)}
    builds |= set(built)
    return {
        "schema": 1,
        "id": ident,
        "request": request,
        "status": status,
        "first_bad": first_bad,
        "candidates": list(candidates or ([first_bad["sha"]] if first_bad else [])),
        "reason": reason,
        "last_good": last_good,
        "steps": steps,
        "verified": verification_outcome(verification)[0] if verification else None,  # None: nothing to verify
        "verification": list(verification or []),
        "tests": sum(1 for s in steps if s.get("image")),
        "builds": len(builds),
        "rounds": rounds(steps),
        "machines": list(machines),
        "started": now_iso(started) if started else None,
        "finished": now_iso(finished),
    }
