"""Pieces shared by the force forms (bisect, test an image, repair a machine)."""

from __future__ import annotations

from buildbot.plugins import util


def no_source() -> util.CodebaseParameter:
    """A codebase with every source field fixed empty: these forms name what they work on in their own
    fields (a branch target, an image, a machine), so the form shows no revision or repository boxes and
    a REST call cannot smuggle a source stamp in."""
    return util.CodebaseParameter(
        "", branch=util.FixedParameter(name="branch", default=""),
        revision=util.FixedParameter(name="revision", default=""),
        repository=util.FixedParameter(name="repository", default=""),
        project=util.FixedParameter(name="project", default=""))
