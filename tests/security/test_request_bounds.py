"""Lists and strings a maintainer's bisect request carries are bounded before any work (README "Bisecting",
docs/bisect.md): the form and the REST call hand the same fields to ``parse_request``."""

from __future__ import annotations

import pytest

from buildbot_kernel.bisect.engine import BisectInputError
from buildbot_kernel.bisect.request import MAX_GOOD_REVISIONS, MAX_REVISION_CHARS, Target, parse_request
from buildbot_kernel.settings import Test

TARGETS = [Target("drm-tip", "drm-intel", "https://example.org/i915.git", "drm-tip", "x86_64")]
TESTS = [Test(name="boot", command="true", mode="boot", timeout=30)]


def parse(**fields):
    return parse_request({"target": "drm-tip", "good": "v6.8", "bad": "drm-tip", "test": "boot", **fields},
                         TARGETS, ["x86_64"], ["skl-1"], TESTS)


@pytest.mark.parametrize("fields, field, says", [
    ({"good": " ".join(f"v6.{i}" for i in range(5000))}, "good", f"5000 good revisions; give at most "
                                                                 f"{MAX_GOOD_REVISIONS}"),
    ({"good": "v6.8 " + "a" * 100_000}, "good", f"has 100000 characters; a revision (commit, tag or branch) has at "
                                                f"most {MAX_REVISION_CHARS}"),
    ({"bad": "b" * 1_000_000}, "bad", "has 1000000 characters"),
])
def test_a_request_with_unbounded_revisions_is_refused_before_any_work(fields, field, says):
    """The hole: the good field took any number of revisions of any length.  Each costs git work before
    the bisect starts (a rev-parse and an ancestry check per revision), all of them are kept in the
    bisect's request.json, passed to every ``git rev-list --bisect-all`` and listed on the Kernels
    dashboard at every refresh: 5,000 revisions from one maintainer's form kept the master's git busy
    for minutes and made the dashboard page megabytes."""
    with pytest.raises(BisectInputError) as e:
        parse(**fields)
    assert e.value.field == field and says in str(e.value), str(e.value)[:300]
    assert len(str(e.value)) < 400  # the refusal does not echo the input back


def test_a_bisect_with_many_good_revisions_up_to_the_bound_is_fine():
    r = parse(good=" ".join(f"v6.{i}" for i in range(MAX_GOOD_REVISIONS)), bad="c" * MAX_REVISION_CHARS)
    assert len(r.good) == MAX_GOOD_REVISIONS and len(r.bad) == MAX_REVISION_CHARS


HUGE = "Z" * 100_000


@pytest.mark.parametrize("field, value", [
    ("target", HUGE), ("tester", HUGE), ("test", HUGE), ("build_config", HUGE), ("build_missing", HUGE),
    ("max_steps", HUGE), ("max_machines", HUGE), ("max_steps", "9" * 5000), ("max_steps", -1),
    ("mode", HUGE),
])
def test_a_refused_field_is_named_but_not_echoed_whole(field, value):
    """The hole: every other field's refusal repeated the value as given, so a 100k-character target,
    tester, test, build_config or max_steps became a 100k-character step summary (each build page and
    REST build list of anyone who reads builds) and "input error" log."""
    fields = {field: value}
    if field == "mode":
        fields.update(test="", command="true")
    with pytest.raises(BisectInputError) as e:
        parse(**fields)
    assert e.value.field == field, str(e.value)[:300]
    assert len(str(e.value)) < 400, str(e.value)[:300]


@pytest.mark.parametrize("rev", [":/fix", "HEAD^{/fix}", "v6.8:Makefile", ":0:Makefile", "drm-tip^{/(a*)*b}"])
@pytest.mark.parametrize("field", ["good", "bad"])
def test_a_revision_that_searches_commit_messages_is_refused(field, rev):
    """The hole: ``:/text`` and ``rev^{/regex}`` make ``git rev-parse`` walk the history reading every
    commit message (a kernel has over a million) with a regex the caller chose; 65 of them per request
    kept the master's git threads busy for many minutes.  No commit, tag or branch needs ':' or '^{/'."""
    fields = {"good": rev} if field == "good" else {"bad": rev}
    with pytest.raises(BisectInputError) as e:
        parse(**fields)
    assert e.value.field == field and "commit message" in e.value.message, str(e.value)


def test_ordinary_revisions_are_still_fine():
    r = parse(good="v6.8 v6.7^ drm-tip~3 0123abcd HEAD@{1}", bad="drm-tip^{commit}")
    assert r.good[:2] == ("v6.8", "v6.7^") and r.bad == "drm-tip^{commit}"
