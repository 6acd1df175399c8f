"""Small helpers shared by the Buildbot glue."""

import re


def identifier(text: str) -> str:
    """Buildbot identifiers (step and scheduler names, REST URLs) allow [A-Za-z0-9_-] only, 50 at most."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:50]
