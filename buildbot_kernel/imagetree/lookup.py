"""Find the image(s) of a commit by full sha or unique prefix, as ``git`` resolves abbreviations.

One commit can have several images (it is on two branches, or built with two build configs), so a
lookup answers the commit's images; it is ambiguous only when the prefix names two different commits.
The index is a sorted list of shas searched with ``bisect``: a lookup among 10,000 images costs
microseconds, so the HTTP endpoint and the bisect tool can ask per step without a cache of their own.
"""

from __future__ import annotations

import bisect
import re

from buildbot_kernel.errors import BuildbotKernelError

MIN_PREFIX = 4
_HEX = re.compile(r"^[0-9a-f]+\Z")


class LookupError_(BuildbotKernelError, LookupError):
    """Base of the lookup errors; ``str()`` is a message for a person."""


class BadPrefix(LookupError_):
    pass


class NotFound(LookupError_):
    pass


class Ambiguous(LookupError_):
    """``matches`` is [{"sha": ..., "names": [...]}, ...] of every commit the prefix names."""

    def __init__(self, prefix: str, matches: list[dict]):
        self.prefix = prefix
        self.matches = matches
        lines = "\n".join(f"  {m['sha']}  {', '.join(m['names'])}" for m in matches)
        super().__init__(f"sha prefix {prefix!r} is ambiguous; it matches {len(matches)} commits:\n{lines}")


def normalize_prefix(prefix: str) -> str:
    p = prefix.strip().lower()
    if not _HEX.match(p) or len(p) < MIN_PREFIX or len(p) > 64:
        raise BadPrefix(f"{prefix!r} is not a commit sha or prefix; expected {MIN_PREFIX} to 64 hex digits")
    return p


class ShaLookup:
    """Lookup over index entries (dicts with at least ``sha``); entries keep their index order."""

    def __init__(self, entries: list[dict]):
        # an index.json may come from anywhere: an entry without a string sha can never match, and
        # must not turn a lookup into a traceback
        self.entries = [e for e in entries if isinstance(e, dict) and isinstance(e.get("sha"), str)
                        and isinstance(e.get("name", ""), str)]
        entries = self.entries
        pairs = sorted((e["sha"], i) for i, e in enumerate(entries))
        self._shas = [s for s, _ in pairs]
        self._idx = [i for _, i in pairs]

    def find(self, prefix: str, **filters: str) -> tuple[str, list[dict]]:
        """(full sha, its images newest first); filters such as ``branch=`` or ``build=`` narrow them.

        Raises BadPrefix, NotFound or Ambiguous.
        """
        p = normalize_prefix(prefix)
        lo = bisect.bisect_left(self._shas, p)
        hi = lo
        while hi < len(self._shas) and self._shas[hi].startswith(p):
            hi += 1
        if lo == hi:
            raise NotFound(f"no image for a commit starting with {p!r}")
        shas = sorted(set(self._shas[lo:hi]))
        if len(shas) > 1:
            names: dict[str, list[str]] = {s: [] for s in shas}
            for k in range(lo, hi):
                names[self._shas[k]].append(self.entries[self._idx[k]].get("name", "?"))
            raise Ambiguous(p, [{"sha": s, "names": sorted(names[s])} for s in shas])
        found = [self.entries[i] for i in sorted(self._idx[lo:hi])]
        active = {k: v for k, v in filters.items() if v}
        found = [e for e in found if all(e.get(k) == v for k, v in active.items())]
        if not found:
            wanted = ", ".join(f"{k}={v}" for k, v in active.items())
            raise NotFound(f"commit {shas[0]} has images, but none with {wanted}")
        return shas[0], found


def _on_branch(entry: dict, branch: str) -> bool:
    """``branch`` as git names it (``topic/x``) or as its directory in the tree (``topic-x``)."""
    path = entry.get("path")
    return entry.get("branch") == branch or (isinstance(path, str) and path.split("/", 1)[0] == branch)


def select(entries: list[dict], branch: str | None = None, build: str | None = None) -> list[dict]:
    """The entries of a branch and/or build config, in the index's order (per branch: the head's image
    first, then the head's history; docs/index-format.md, "Order, head and latest")."""
    return [e for e in entries if isinstance(e, dict) and (not branch or _on_branch(e, branch))
            and (not build or e.get("build") == build)]


def latest(entries: list[dict], branch: str, build: str | None = None) -> list[dict]:
    """What ``<branch>/latest`` means, one image per build config: the head's image, else the first one
    in the branch's order that a bisect did not build."""
    chosen: dict[str, dict] = {}
    for e in select(entries, branch, build):
        key = str(e.get("build"))
        if e.get("head") is True:
            chosen[key] = e
        elif key not in chosen and e.get("on_demand") is not True:
            chosen[key] = e
    return list(chosen.values())
