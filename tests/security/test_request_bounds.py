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
