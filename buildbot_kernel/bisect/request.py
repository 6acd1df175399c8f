"""What a maintainer asks the bisect builder for, checked field by field before any work.

The form (Buildbot ForceScheduler) and the REST call hand over the same property names; everything the
settings decide (which branches exist, which build configs, which test machines) is checked here so a
mistake comes back as one :class:`BisectInputError` naming the field and the accepted values, before a
clone is fetched or a directory is written. Revisions themselves are checked by the engine
(``start_bisect``) against the mirror clone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

from buildbot_kernel.bisect.engine import BisectInputError
from buildbot_kernel.settings import DEFAULT_TEST_TIMEOUT as DEFAULT_TIMEOUT  # a free-form command's
from buildbot_kernel.settings import (
    LOCAL_TESTER,  # noqa: F401  (the bisect form's name for it)
    Test,  # a named test: what a maintainer may run, by name
)
from buildbot_kernel.settings import TEST_MODES as MODES
from buildbot_kernel.util import shown

# form property names (contract: the REST call's params use them too)
FIELDS = ("target", "good", "bad", "tester", "test", "command", "mode", "build_missing", "build_config",
          "max_steps", "max_machines")
# each good revision costs git work before the bisect starts and is kept and shown with the bisect; a
# request is refused past these rather than keeping the master busy (git bisect needs the newest goods only)
MAX_GOOD_REVISIONS = 64
MAX_REVISION_CHARS = 256
# revision syntax that makes git read every commit message (``:/text``, ``rev^{/regex}``, with a regex the
# caller chose) or names a file (``rev:path``): no commit, tag or branch name holds these
SEARCHING = (":", "^{/")


@dataclass(frozen=True)
class Target:
    """One configured (repository, branch): what the form's ``target`` choice stands for."""

    builder: str  # the branch build builder's name (the choice's value)
    repository: str
    url: str
    branch: str
    build: str  # the build config its builder builds


@dataclass(frozen=True)
class BisectRequest:
    target: str
    repository: str
    url: str
    branch: str
    good: tuple[str, ...]
    bad: str
    tester: str
    command: str
    mode: str
    build_missing: bool
    build_config: str
    max_steps: int  # 0 = no limit
    test: str = ""  # the [[test]] the command and mode come from; "" = a free-form command (admins only)
    timeout: int = DEFAULT_TIMEOUT  # seconds before the test is killed (a skip)
    max_machines: int = 0  # test machines of the tester's class used at once; 0 = every free one

    def to_json(self) -> dict:
        d = asdict(self)
        d["good"] = list(self.good)
        return d

    def with_tester(self, machine: str) -> BisectRequest:
        """The same request on one machine (a class of one names its machine to the farm)."""
        return replace(self, tester=machine)

    @classmethod
    def from_json(cls, d: dict) -> BisectRequest:
        return cls(**{**d, "good": tuple(d["good"])})


def split_revisions(text: str) -> list[str]:
    """Good revisions as typed in one form field: separated by spaces, commas or new lines."""
    return [w for w in re.split(r"[\s,]+", text or "") if w]


def parse_request(props: Mapping, targets: list[Target], builds: list[str], machines,
                  tests: Sequence[Test] = ()) -> BisectRequest:
    """Check the form's properties against the settings; raise :class:`BisectInputError` on the first
    field that is wrong.  ``machines``: the tester names a bisect may give (machines and machine classes,
    ``settings.tester_names``).  Who may give a free-form ``command`` is not decided here (the REST layer and
    the start step check the caller)."""
    by_name = {t.builder: t for t in targets}
    choice = str(props.get("target") or "").strip()
    if choice not in by_name:
        raise BisectInputError("target", f"{shown(choice)} is not a configured repository branch; "
                               f"choose one of: {', '.join(by_name)}")
    t = by_name[choice]
    good = split_revisions(str(props.get("good") or ""))
    if not good:
        raise BisectInputError("good", "at least one good revision is required (space-separated for several)")
    if len(good) > MAX_GOOD_REVISIONS:
        raise BisectInputError("good", f"{len(good)} good revisions; give at most {MAX_GOOD_REVISIONS} (the newest "
                               "revisions known to work are enough)")
    bad = str(props.get("bad") or "").strip()
    if not bad:
        raise BisectInputError("bad", "a bad revision is required (a commit or branch that shows the problem)")
    if len(bad.split()) > 1:
        raise BisectInputError("bad", f"{bad[:80]!r}: give exactly one bad revision")
    for field, rev in [("good", g) for g in good] + [("bad", bad)]:
        if len(rev) > MAX_REVISION_CHARS:
            raise BisectInputError(field, f"{rev[:40]!r}... has {len(rev)} characters; a revision (commit, tag or "
                                   f"branch) has at most {MAX_REVISION_CHARS}")
        if any(s in rev for s in SEARCHING):
            raise BisectInputError(field, f"{shown(rev)} searches commit messages or names a file (':', '^{{/'); "
                                   "give a commit, tag or branch (e.g. v6.8, drm-tip~3 or a sha)")
    tester = str(props.get("tester") or LOCAL_TESTER).strip()
    if tester != LOCAL_TESTER and tester not in machines:
        raise BisectInputError("tester", f"{shown(tester)} is neither {LOCAL_TESTER!r} nor a configured [[machine]] "
                               f"or machine class (configured: {', '.join(machines) or 'none'})")
    test_name, command, mode, timeout = _test_or_command(props, tests)
    build_missing = _boolean(props.get("build_missing", True))
    build_config = str(props.get("build_config") or t.build).strip()
    if build_config not in builds:
        raise BisectInputError("build_config", f"{shown(build_config)} is not a configured [[build]] "
                               f"(configured: {', '.join(builds)})")
    if build_missing and build_config != t.build:
        raise BisectInputError("build_config", f"{t.builder} builds with {t.build!r}, so missing "
                               f"{build_config!r} images cannot be built; choose {t.build!r} or turn "
                               "build_missing off to bisect over existing images only")
    max_steps = _whole_number(props.get("max_steps", 0), "max_steps", "test steps (0 = no limit)")
    max_machines = _whole_number(props.get("max_machines", 0), "max_machines",
                                 "test machines of the class used at once (0 = every free one)")
    return BisectRequest(target=t.builder, repository=t.repository, url=t.url, branch=t.branch,
                         good=tuple(good), bad=bad, tester=tester, command=command, mode=mode,
                         build_missing=build_missing, build_config=build_config, max_steps=max_steps,
                         test=test_name, timeout=timeout, max_machines=max_machines)


def _test_or_command(props: Mapping, tests) -> tuple[str, str, str, int]:
    """(test name, command, mode, timeout): a named test decides all of them; a free-form command takes
    the form's mode and the default timeout."""
    by_name = {t.name: t for t in tests}
    name = str(props.get("test") or "").strip()
    command = str(props.get("command") or "").strip()
    if name and command:
        raise BisectInputError("command", f"give either a named test ({name!r}) or a free-form command, not both")
    if name:
        if name not in by_name:
            raise BisectInputError("test", f"{shown(name)} is not a configured [[test]] "
                                   f"(configured: {', '.join(by_name) or 'none'})")
        t = by_name[name]
        return t.name, t.command, t.mode, t.timeout
    if not command:
        raise BisectInputError("test", "choose a named test (configured: "
                               f"{', '.join(by_name) or 'none'}) or, as an admin, give a free-form command: "
                               "exit 0 good, 125 skip, 1-127 bad")
    mode = str(props.get("mode") or "boot").strip()
    if mode not in MODES:
        raise BisectInputError("mode", f"{shown(mode)}: expected 'boot' (a boot failure is bad) or "
                               "'test' (a boot failure is skip)")
    return "", command, mode, DEFAULT_TIMEOUT


def _boolean(v) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise BisectInputError("build_missing", f"{shown(v)}: expected true or false")


def _whole_number(v, name: str, what: str) -> int:
    try:
        n = int(str(v).strip() or 0)
    except ValueError:
        n = -1
    if n < 0:
        raise BisectInputError(name, f"{shown(v)}: expected a whole number of {what}")
    return n
