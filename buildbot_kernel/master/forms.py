"""Pieces shared by the force forms (build, check heads, bisect, test an image, repair a machine)."""

from __future__ import annotations

from buildbot.plugins import util

# Buildbot keeps "A build was forced by '<owner>': <reason>" in a 256-character column (PostgreSQL
# refuses more); the form refuses a longer reason, naming the field, before anything is stored
MAX_REASON_CHARS = 160


def reason(default: str, label: str = "reason", size: int = 40) -> util.StringParameter:
    """Every form's free-text reason, bounded (:data:`MAX_REASON_CHARS`)."""
    return util.StringParameter(name="reason", label=label, default=default, size=size, maxsize=MAX_REASON_CHARS)


def no_source() -> util.CodebaseParameter:
    """A codebase with every source field fixed empty: these forms name what they work on in their own
    fields (a branch target, an image, a machine), so the form shows no revision or repository boxes and
    a REST call cannot smuggle a source stamp in."""
    return util.CodebaseParameter(
        "", branch=util.FixedParameter(name="branch", default=""),
        revision=util.FixedParameter(name="revision", default=""),
        repository=util.FixedParameter(name="repository", default=""),
        project=util.FixedParameter(name="project", default=""))
