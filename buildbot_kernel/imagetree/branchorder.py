"""A branch's images in the order of the branch's history, its head, and which image ``latest`` names.

The index generator must stay pure and cheap (no git), so what it needs from git arrives as a small
state file, ``<root>/.state/heads.json``, written by the master whenever it learns a branch's head (the
heads check, every publish; see :mod:`buildbot_kernel.heads`)::

    {"schema": 1, "branches": {"<branch dir>": {"branch": "topic/x", "head": "<sha>",
                                                "history": ["<sha>", ...] | null, "updated": "<ISO>"}}}

``history`` lists the branch's image commits that are in the head's history, newest first (the
``git rev-list --topo-order <head>`` order); ``null`` when git could not say (the head not fetched yet).
The file comes from the master but lives in a tree people write by hand: every value is checked, and an
entry that does not check out counts as absent (the branch is then ordered by commit date).

Contract (docs/index-format.md, "Order, head and latest").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from buildbot_kernel import jsondepth
from buildbot_kernel.imagetree import reserved
from buildbot_kernel.imagetree.atomic import atomic_write
from buildbot_kernel.imagetree.package import STATE, read_bytes
from buildbot_kernel.imagetree.record import ImageRecord
from buildbot_kernel.utctime import iso_utc

HEADS_NAME = "heads.json"
HEADS_FILE = f"{STATE}/{HEADS_NAME}"
SCHEMA = 1
MAX_HISTORY = 100_000  # more image commits than any tree keeps; a longer list is not ours
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")


def is_sha(text: object) -> bool:
    """A full lowercase commit id (SHA-1 or SHA-256), as git prints it."""
    return isinstance(text, str) and bool(_SHA.match(text))


@dataclass(frozen=True)
class BranchState:
    branch: str
    head: str
    history: tuple[str, ...] | None  # image commits on the head's history, newest first; None = unknown
    rank: dict[str, int] = field(default_factory=dict, compare=False, hash=False)

    @property
    def version(self) -> tuple:
        """Changes whenever what the index shows for this branch could change."""
        return (self.head, self.history)

    def on_history(self, sha: str) -> bool | None:
        """True/False, or None when the history is unknown."""
        return None if self.history is None else sha in self.rank


def make_state(branch: str, head: str, history: Sequence[str] | None) -> BranchState:
    hist = None if history is None else tuple(history)
    return BranchState(branch, head, hist, {s: k for k, s in reversed(list(enumerate(hist or ())))})


def parse_entry(entry: object) -> BranchState | None:
    """One branch's entry, or None when any value is not what the writer writes."""
    if not isinstance(entry, dict):
        return None
    branch, head, history = entry.get("branch"), entry.get("head"), entry.get("history")
    if not isinstance(branch, str) or not branch or not isinstance(head, str) or not _SHA.match(head):
        return None
    if history is not None:
        if not isinstance(history, list) or len(history) > MAX_HISTORY \
                or not all(isinstance(s, str) and _SHA.match(s) for s in history):
            return None
    return make_state(branch, head, history)


def parse(text: str | bytes) -> dict[str, BranchState]:
    """heads.json -> {branch dir: state}; a damaged file or a wrong schema is an empty state."""
    try:
        doc = jsondepth.loads(text, HEADS_FILE)  # the shared tree's file: others can write it
    except ValueError:
        return {}
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("branches"), dict):
        return {}
    out = {}
    for branch_dir, entry in doc["branches"].items():
        state = parse_entry(entry)
        if state is not None and isinstance(branch_dir, str):
            out[branch_dir] = state
    return out


class HeadsFile:
    """Reads ``heads.json`` only when it changed (one stat per index regeneration)."""

    def __init__(self, root: str | os.PathLike):
        self.path = Path(root) / HEADS_FILE
        self._key: tuple | None = None
        self._states: dict[str, BranchState] = {}

    def load(self) -> dict[str, BranchState]:
        try:
            st = os.stat(self.path)
        except OSError:
            self._key, self._states = None, {}
            return self._states
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key != self._key:
            try:
                with open(self.path, "rb") as f:
                    self._states = parse(f.read(1 << 24))
            except OSError:
                self._states = {}
            self._key = key
        return self._states


def update(root: str | os.PathLike, branch_dir: str, state: BranchState) -> None:
    """Replace one branch's entry (atomically; callers serialize writers, see ``heads.record_head``),
    in a ``.state`` reached without following a symlink (reserved.py: raises RefusedEntry for one)."""
    with reserved.opened(root, STATE, create=True) as state_fd:
        try:
            doc = jsondepth.loads(read_bytes(HEADS_NAME, state_fd), HEADS_FILE)
            if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("branches"), dict):
                doc = {}
        except (OSError, ValueError):
            doc = {}
        branches = doc.get("branches", {})
        branches[branch_dir] = {"branch": state.branch, "head": state.head,
                                "history": None if state.history is None else list(state.history),
                                "updated": iso_utc()}
        atomic_write(HEADS_NAME, json.dumps({"schema": SCHEMA, "branches": branches}, indent=1, sort_keys=True)
                     + "\n", dir_fd=state_fd)


# ---- order -----------------------------------------------------------------------------------------


def branch_order(images: Iterable[ImageRecord], state: BranchState | None) -> list[ImageRecord]:
    """One branch's images, first to last: the head's image(s), then the images on the head's history in
    history order, then the rest (not on the history, or the history unknown) newest commit first.
    Ties (one commit, several build configs or rebuilds) keep the order given: the scan's, newest
    build first.  Linear but for the sorts, so 10,000 images cost milliseconds."""
    if state is None:
        return _by_commit_date(images)
    rank, head = state.rank, state.head
    first, ranked, rest = [], [], []
    for img in images:
        sha = img.sha
        if sha == head:
            first.append(img)
        elif sha in rank:
            ranked.append((rank[sha], img))
        else:
            rest.append(img)
    ranked.sort(key=lambda pair: pair[0])  # stable: ties keep the given order
    return first + [img for _, img in ranked] + _by_commit_date(rest)


def _by_commit_date(images: Iterable[ImageRecord]) -> list[ImageRecord]:
    return sorted(images, key=lambda i: (i.sort_key[1], i.sort_key[0], i.name), reverse=True)


def pick_latest(ordered: Sequence[ImageRecord], state: BranchState | None) -> ImageRecord | None:
    """What ``<branch>/latest`` names: the head's image; else the newest image on the head's history
    that was not built for a bisect; with no known history, the newest such image by commit date.
    None when no image qualifies (only on-demand images, or none on the history): no ``latest``."""
    if state is not None:
        for img in ordered:
            if img.sha == state.head:
                return img
    for img in ordered:
        if img.on_demand:
            continue
        if state is not None and state.on_history(img.sha) is False:
            continue
        return img
    return None
