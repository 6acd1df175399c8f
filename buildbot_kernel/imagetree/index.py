"""The generated index of an image tree (contract, see docs/index-format.md).

Writes ``<root>/index.{json,html}``, ``<root>/<branch>/index.{json,html}`` and ``<root>/<branch>/latest``,
each atomically.  One ``TreeIndex`` per tree is meant to live as long as the process (master, watchdog,
CLI run): it keeps the scanner's manifest cache and each image's encoded JSON, and skips files whose
content would not change, so the regeneration after a publish costs little more than a directory walk
and the writes of what did change.  That also keeps the watchdog from looping on its own writes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import orjson
from markupsafe import Markup

from buildbot_kernel import jsondepth, resources
from buildbot_kernel.imagetree import branchorder, reserved
from buildbot_kernel.imagetree.atomic import atomic_write
from buildbot_kernel.imagetree.modes import WORLD_READABLE, Modes
from buildbot_kernel.imagetree.package import STATE
from buildbot_kernel.imagetree.record import ImageRecord
from buildbot_kernel.imagetree.rows import image_row
from buildbot_kernel.imagetree.scan import TreeScanner
from buildbot_kernel.imagetree.treelock import TreeLock
from buildbot_kernel.utctime import iso_utc

log = logging.getLogger(__name__)

SCHEMA = 1
INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
LATEST = "latest"
GENERATED_FILES = (INDEX_JSON, INDEX_HTML, LATEST)
CACHE = f"{STATE}/index-cache.json"
LOCK = f"{STATE}/index.lock"  # one index writer at a time, also across masters (imagetree/treelock.py)
CACHE_SCHEMA = 5  # 2: entries carry "head" and "on_demand"; 3: each image also keeps its test results;
# 4: one line per image (parsed line by line: no long parse holding the interpreter lock); 5: data only,
# no rendered JSON or HTML (the cache lies on the tree: what it claims is checked, then rendered here)


def templates_dir() -> Path:
    """The shipped templates (package data, so an installed wheel has them too)."""
    return resources.templates_dir()


def html_template(name: str | None) -> bool:
    """Autoescape HTML templates only: escaping a config file or export line would corrupt it."""
    return bool(name) and name.endswith((".html.j2", ".html"))


def make_env(directory: Path | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory or templates_dir())),
        autoescape=html_template,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


@dataclass
class Result:
    """What one regeneration saw and did."""

    images: list[dict]
    written: list[str] = field(default_factory=list)  # paths relative to the root
    skipped: dict[str, str] = field(default_factory=dict)  # incomplete directories and why
    mode_problems: list[str] = field(default_factory=list)  # paths the permission contract could not fix


class TreeIndex:
    """Regenerates the index files of one tree; thread-safe (publish, watchdog and retention share it).

    It also keeps the permission contract (``modes``, docs/serving.md) for what an admin changed by hand:
    the files it writes get the contract's mode and group, the root and branch directories are fixed at
    each regeneration, and each image directory (with its files) when it is first seen or rewritten, so
    an image copied in with umask 077 becomes readable before the index lists it.  What it cannot fix
    (not the master's) is logged and reported in ``Result.mode_problems``.
    """

    def __init__(self, root: str | os.PathLike, base_url: str, templates: Path | None = None,
                 modes: Modes = WORLD_READABLE):
        self.root = Path(root)
        self.base_url = base_url
        self.modes = modes
        self.scanner = TreeScanner(self.root, modes)  # fixes each image's modes when it first sees it
        self.env = make_env(templates)
        # held by callers that must regenerate and act as one step; also across masters sharing the tree
        self.lock = TreeLock(self.root / LOCK)
        self._encoded: dict[str, tuple[ImageRecord, dict, str, str]] = {}  # path -> (image, entry, json, row)
        self._signatures: dict[str, tuple] = {}  # generated file -> (signature of what it shows, file id)
        self.heads = branchorder.HeadsFile(self.root)

    def _entries(self, images: list[ImageRecord]) -> dict[str, tuple[dict, str, str]]:
        """(entry, its JSON, its HTML row) by image path, each encoded once per image version."""
        out = {}
        fresh = {}
        for img in images:
            cached = self._encoded.get(img.path)
            if cached is None or cached[0] is not img:
                entry = img.to_index_entry(self.base_url)
                cached = (img, entry, _encode(entry), image_row(entry))
            fresh[img.path] = cached
            out[img.path] = cached[1:]
        self._encoded = fresh
        return out

    def _as_head(self, encoded: tuple[dict, str, str]) -> tuple[dict, str, str]:
        """A head image's entry: re-encoded each time (one or two per branch)."""
        entry = {**encoded[0], "head": True}
        return entry, _encode(entry), image_row(entry)

    def save_cache(self) -> None:
        """Write what this process read of each image (its metadata, results and stat key) to
        ``.state/index-cache.json``, so the next process (``buildbot-kernel index``, a master restart)
        regenerates without re-reading every manifest.  Only a speed-up: an entry is used only while the
        files' stat data still match.  Never anything rendered: the file lies on the tree, and a row of
        HTML taken from it as it is would put whatever it holds into the pages."""
        with self.lock:
            encoded = list(self._encoded.items())
        lines = [json.dumps({"schema": CACHE_SCHEMA})]
        for path, (img, _entry, _text, _row) in encoded:
            lines.append(orjson.dumps([path, list(img.version), img.metadata, img.tests]).decode("utf-8"))
        with reserved.opened(self.root, STATE, create=True) as state_fd:  # never through a symlink
            atomic_write(Path(CACHE).name, (line + "\n" for line in lines), durable=False, dir_fd=state_fd)

    def load_cache(self) -> int:
        """Seed the scanner from a saved cache; returns how many images it kept.  Each is checked as a
        first read of its manifests would check it (``TreeScanner.seed``) and rendered afresh."""
        try:
            # line by line, never the whole file in one call: reading and splitting 30 MB at 10,000
            # images held the interpreter lock for 40-70 ms, a stall of the master's reactor
            with open(self.root / CACHE, encoding="utf-8") as f:
                head = jsondepth.loads(f.readline(), CACHE)
                if head.get("schema") != CACHE_SCHEMA:
                    return 0
                # on the shared tree: a line nested too deep is a damaged cache (jsondepth.py)
                seeded = [jsondepth.check_depth(line, orjson.loads(line), CACHE) for line in f if line.strip()]
            kept = 0
            with self.lock:
                for path, key, meta, tests in seeded:
                    branch_dir, name = path.rstrip("/").split("/")
                    kept += self.scanner.seed(branch_dir, name, meta, key, tests) is not None
            return kept
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0  # no cache or a damaged one: the scan reads everything

    def _changed(self, rel: str, signature: tuple) -> bool:
        """Also when the file is not the one this process wrote: another master sharing the tree wrote it."""
        return self._signatures.get(rel) != (signature, _file_id(self.root / rel))

    def _write(self, rel: str, text: str | list[str], signature: tuple, result: Result) -> None:
        # no fsync: every start regenerates these files (ImageTreeService), so a crash costs nothing
        atomic_write(self.root / rel, text, mode=self.modes.file_mode, gid=self.modes.gid, durable=False)
        self._signatures[rel] = (signature, _file_id(self.root / rel))
        result.written.append(rel)

    def regenerate(self, exclude: frozenset[str] | set[str] = frozenset()) -> Result:
        """Rescan and rewrite what changed.  ``exclude`` = image paths (``branch/name/``) to leave out:
        retention excludes what it is about to delete, so the index never lists a deleted image."""
        with self.lock, cyclic_gc_paused():
            images = [i for i in self.scanner.scan() if i.path not in exclude]
            result = Result([], skipped=dict(self.scanner.skipped), mode_problems=list(self.scanner.mode_problems))
            encoded = self._entries(images)
            branches = self.ordered(images)
            generated = iso_utc()
            rows: dict[str, list[tuple[dict, str, str]]] = {}
            signatures: dict[str, tuple] = {}
            for b, (state, ordered, _latest) in branches.items():
                head = state.head if state else None
                rows[b] = [self._as_head(encoded[i.path]) if head and i.metadata["sha"] == head
                           else encoded[i.path] for i in ordered]
                signatures[b] = (state.version if state else None, tuple((i.path, i.version) for i in ordered))
            # branch files first: whoever sees the new root index.json finds the branch files current
            for b in _branch_dirs(self.root) | branches.keys():
                state, ordered, latest = branches.get(b, (None, [], None))
                self._write_branch(b, ordered, rows.get(b, []), signatures.get(b, (None, ())), latest,
                                   generated, result)
            signature = tuple(signatures.items())
            all_rows = [e for b in branches for e in rows[b]]
            result.images = [e[0] for e in all_rows]
            if self._changed(INDEX_JSON, signature) or self._changed(INDEX_HTML, signature):
                page = _PageRows()
                groups = [{"dir": b, "name": ordered[0].metadata["branch"], "count": len(ordered),
                           "rows": page.slot(rows[b])} for b, (_st, ordered, _latest) in branches.items()]
                html = self.env.get_template("index.html.j2").render(
                    generated=generated, branches=groups, count=len(images), branch_dir=None)
                self._write(INDEX_HTML, page.pieces(html), signature, result)
                self._write(INDEX_JSON, _json_doc(generated, [e[1] for e in all_rows]), signature, result)
            result.mode_problems += self._fix_generated(branches.keys())
            for problem in result.mode_problems:
                log.warning("permission contract: %s", problem)
            return result

    def ordered(self, images: list[ImageRecord]) -> dict[str, tuple]:
        """{branch dir: (heads state or None, its images first to last, the image ``latest`` names)},
        branches with the newest first image (by commit date) first: the order of the root index."""
        states = self.heads.load()
        by_branch: dict[str, list[ImageRecord]] = {}
        for img in images:
            by_branch.setdefault(img.branch_dir, []).append(img)
        out = {}
        for b, imgs in by_branch.items():
            state = states.get(b)
            ordered = branchorder.branch_order(imgs, state)
            out[b] = (state, ordered, branchorder.pick_latest(ordered, state))
        return dict(sorted(out.items(), key=lambda kv: (-kv[1][1][0].sort_key[1], kv[0])))

    def _fix_generated(self, branch_dirs) -> list[str]:
        """The root, the branch directories and the generated files (unchanged ones too: an admin's chmod
        or an older version of this program may have left them unreadable).  A few stats per branch."""
        problems = self.modes.apply_dir(self.root, GENERATED_FILES, follow=True)
        for b in branch_dirs:
            problems += self.modes.apply_dir(self.root / b, GENERATED_FILES)
        return problems

    def _write_branch(self, b: str, images: list[ImageRecord], encoded: list[tuple[dict, str, str]], signature: tuple,
                      latest: ImageRecord | None, generated: str, result: Result) -> None:
        rel_json, rel_html, rel_latest = f"{b}/{INDEX_JSON}", f"{b}/{INDEX_HTML}", f"{b}/{LATEST}"
        if not (self._changed(rel_json, signature) or self._changed(rel_html, signature)
                or (latest is not None and self._changed(rel_latest, signature))):
            return
        branch = images[0].metadata["branch"] if images else b
        self._write(rel_json, _json_doc(generated, [e[1] for e in encoded], branch=branch), signature, result)
        page = _PageRows()
        html = self.env.get_template("branch-index.html.j2").render(
            generated=generated, branch=branch, branch_dir=b, count=len(images), rows=page.slot(encoded))
        self._write(rel_html, page.pieces(html), signature, result)
        if latest is not None:
            self._write(rel_latest, latest.name + "\n", signature, result)
        else:  # no image, or only images built for a bisect: nothing a lab should boot as "latest"
            try:
                (self.root / rel_latest).unlink()
                result.written.append(rel_latest)
            except FileNotFoundError:
                pass
            self._signatures.pop(rel_latest, None)


def _encode(entry: dict) -> str:
    """An entry's line of index.json (sorted keys, UTF-8 text): orjson, a tenth of json's time, which
    is most of a first regeneration's encoding work."""
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode("utf-8")


@contextlib.contextmanager
def cyclic_gc_paused():
    """Python's cycle collector off while the index regenerates.  A regeneration from nothing makes
    hundreds of thousands of objects without cycles (stat results, dicts, strings), and the full
    collections that triggers each walk every object of the process (in a master, all of Buildbot's):
    a tenth of the time, to collect nothing.  Reference counting still frees everything; a cycle other
    threads make meanwhile waits for the next collection.  Process-wide, so it is only turned back on
    if it was on."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _file_id(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class _PageRows:
    """The rows of a page go into its template as placeholders and are written as pieces around what the
    template rendered: joined into the page, 10,000 rows were a 10 MB string copied three times (the
    join, the template's output, one encode that held the interpreter lock throughout).  A placeholder
    carries a random token, so no text from the tree (a branch name, a subject) can pass for one."""

    def __init__(self):
        self._token = f"\x00{secrets.token_hex(8)}:"
        self._slots: list[list[tuple[dict, str, str]]] = []

    def slot(self, encoded: list[tuple[dict, str, str]]) -> Markup:
        self._slots.append(encoded)
        return Markup(f"{self._token}{len(self._slots) - 1}\x00")

    def pieces(self, html: str) -> list[str]:
        out = []
        for k, part in enumerate(re.split(re.escape(self._token) + "([0-9]+)\x00", html)):
            if k % 2 == 0:
                out.append(part)
                continue
            for j, e in enumerate(self._slots[int(part)]):
                if j:
                    out.append("\n")
                out.append(e[2])
        return out


def _json_doc(generated: str, encoded_images: list[str], **extra: str) -> list[str]:
    """One image per line: diff-friendly, and each line is the cached C-encoder output.  The pieces of
    the document, written as they are (never joined into one 10 MB string)."""
    head = {"schema": SCHEMA, "generated": generated, **extra}
    parts = [json.dumps(head)[:-1], ', "images": [\n']
    for k, text in enumerate(encoded_images):
        parts.append(text if k == 0 else ",\n" + text)
    parts.append("\n]}\n")
    return parts


def _branch_dirs(root: Path) -> set[str]:
    """Branch directories that hold generated files (a branch whose last image went still has them)."""
    out = set()
    try:
        with os.scandir(root) as it:
            for e in it:
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False) \
                        and os.path.exists(os.path.join(e.path, INDEX_JSON)):
                    out.add(e.name)
    except FileNotFoundError:
        pass
    return out
