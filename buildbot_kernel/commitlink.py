"""Commit links: a repository's ``web_url`` template (``https://host/.../commit/{sha}``) made into URLs.

The template comes from the settings (checked there: http(s), holds ``{sha}``); the sha comes from git,
an index entry or a result file, so it is checked to be hex before it goes into a URL.  ``str.format``
is not used: a template with other braces must not raise or pull attributes out of the sha.
"""

from __future__ import annotations

import re

PLACEHOLDER = "{sha}"
_SHA = re.compile(r"^[0-9a-fA-F]{4,64}\Z")


def commit_url(template: str | None, sha: object) -> str | None:
    """The commit's web page, or None when there is no template or ``sha`` is not a hex commit id."""
    if not template or not isinstance(sha, str) or not _SHA.match(sha):
        return None
    return template.replace(PLACEHOLDER, sha)


class RevLinks:
    """Buildbot's ``revlink`` callable: (revision, repository URL) -> the commit's web page or None.
    A repository without ``web_url`` is left to ``fallback`` (Buildbot's own matcher for GitHub,
    SourceForge, ... URLs), so configuring one repository does not take links away from the others."""

    def __init__(self, templates: dict[str, str], fallback=None):
        self.templates = {url: t for url, t in templates.items() if t}
        self.fallback = fallback

    def __call__(self, revision, repository):
        template = self.templates.get(repository)
        if template is None and self.fallback is not None:
            return self.fallback(revision, repository)
        return commit_url(template, revision)
