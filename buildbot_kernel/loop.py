"""The regression watch's decisions, apart from Buildbot (README.md "Regression watch").

A watched test's result on a new image N of branch B is compared with the nearest earlier tested image
of B whose commit N's commit descends from: a pass there and a fail on N is a regression (P = that
image).  A fail there means the branch was already failing: nothing new to bisect.  Skips and errors
say nothing about the commit and are never a baseline, nor is a fail whose re-run passed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from buildbot_kernel.bisect.engine import BAD, GOOD, SKIP

PASS, FAIL, SKIPPED, ERROR = "pass", "fail", "skip", "error"
VERDICT_RESULT = {GOOD: PASS, BAD: FAIL, SKIP: SKIPPED}
STATE_OBJECT = ("regression-watch", "buildbot_kernel.loop")  # (name, class) of the database state object
REGRESSION_PROPERTY = "regression"  # contract with the notifier: README.md "Regression watch"


def baseline(images: Iterable[dict], test: str, sha: str, is_ancestor: Callable[[str, str], bool]) -> dict | None:
    """The nearest earlier image (an index entry) with a pass or fail of ``test`` whose commit ``sha``
    descends from, or None.  ``images``: index entries of one branch; ``is_ancestor(a, d)`` asks git."""
    tested = [i for i in images if i.get("sha") != sha and _conclusive((i.get("tests") or {}).get(test) or {})]
    best = None
    for image in tested:
        if not is_ancestor(image["sha"], sha):
            continue
        if best is None or (best["sha"] != image["sha"] and is_ancestor(best["sha"], image["sha"])):
            best = image
    return best


def _conclusive(result: dict) -> bool:
    """A pass or a fail; a fail whose re-run disagreed says nothing either way."""
    return result.get("result") in (PASS, FAIL) and result.get("rerun", result["result"]) == result["result"]


def is_regression(base: dict | None, test: str) -> bool:
    return base is not None and base["tests"][test]["result"] == PASS


def claim_key(test: str, branch: str, bad_sha: str) -> str:
    """The database state name for "a bisect of (test, branch, bad sha) was started"; bounded in length
    (branch names may be long)."""
    key = f"bisect:{test}:{branch}:{bad_sha}"
    return key if len(key) <= 200 else "bisect:" + hashlib.sha256(key.encode()).hexdigest()


# the reason of the bisects the watch starts: short, as the bisect form bounds every reason (the owner
# below already says which test, branch and commits)
BISECT_REASON = "regression watch"


def owner(test: str, branch: str, good_sha: str, bad_sha: str) -> str:
    return f"regression-watch: {test} on {branch} ({good_sha[:12]} pass, {bad_sha[:12]} fail)"


def image_ref(entry: dict) -> dict:
    return {"sha": entry.get("sha"), "image": entry.get("name"), "url": entry.get("url")}


def regression_document(test: str, branch: str, repository: str, good: dict, bad: dict, tester: str,
                        bisect: dict | None) -> dict:
    """The ``regression`` build property (contract with the notifier, README.md "Regression watch")."""
    return {"test": test, "branch": branch, "repository": repository, "tester": tester,
            "good": image_ref(good), "bad": image_ref(bad), "bisect": bisect}
