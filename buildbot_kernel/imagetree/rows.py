"""One image as a row of the index pages (docs/index-format.md, "index.html").

A row is made once per image version and cached (the pages are joins of rows), so a regeneration after a
publish makes one row.  A regeneration from nothing makes 10,000: as a Jinja template that was the
largest share of the whole regeneration (a template context, attribute lookups and an escape call per
field, per row), so the row is a function; the pages around the rows stay templates.

Every value is escaped (``html.escape``, also for attributes: it quotes ``"`` and ``'``) and every
file or test name in a link is URL-quoted: metadata and test names come from whoever wrote the tree.
Links are relative to the tree root: branch pages set ``<base href="../">``, so one row serves both
pages, any server or base URL, and ``file://`` on the NFS tree.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote


def escape(value: Any) -> str:
    """HTML-escaped text, also safe inside a quoted attribute (``"`` and ``'`` too)."""
    return html.escape(str(value))


_UNRESERVED = re.compile(r"^[A-Za-z0-9_.~/-]*\Z")
_SPECIAL = re.compile(r"[&<>\"']")  # what ``escape`` changes
_TEXT_KEYS = ("path", "name", "sha", "subject", "commit_date", "build_date", "build", "arch")
# a middle dot as an entity: rows stay ASCII (most metadata is), and an ASCII page of 10,000 rows is
# joined and encoded at copy speed, where one "·" per row makes every row a string to transcode
_SEP = " &middot; "


def filesize(n: int) -> str:
    """Sizes as a person reads them in a listing: 1023 B, 4.2 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _by_name(items: Mapping[str, Any]) -> list:
    """Case-insensitive name order (stable for names equal but for case), as the pages always sorted."""
    return sorted(items.items(), key=lambda kv: kv[0].lower() if isinstance(kv[0], str) else kv[0])


def _quote(name: Any) -> str:
    """URL-quoted as a path (``/`` kept); names ``quote`` leaves alone skip it (most, and it is slow)."""
    name = str(name)
    return name if _UNRESERVED.match(name) else quote(name.encode("utf-8"), safe="/")


@functools.lru_cache(maxsize=1024)
def _file_name_parts(name: Any) -> tuple[str, str]:
    """(escaped URL path, escaped text) of a payload file name: the same few names (vmlinuz, config...)
    recur in every image, so 10,000 rows escape each once."""
    return escape(_quote(name)), escape(name)


def _file_link(path: str, name: Any, size: int) -> str:
    href, text = _file_name_parts(name)
    return f'<a href="{path}{href}">{text}</a>&nbsp;{filesize(size)}'  # digits and a unit: nothing to escape


def image_row(i: Mapping[str, Any]) -> str:
    """The ``<tr>`` of one index entry (the dict ``ImageRecord.to_index_entry`` makes), without a newline."""
    texts = [str(i[k]) for k in _TEXT_KEYS]
    # one search over the row's text instead of ten escapes: most rows have nothing to escape
    esc = escape if _SPECIAL.search("".join(texts)) else str
    path, name, sha, subject, commit_date, build_date, build, arch = texts
    path, name, files = esc(path), esc(name), i["files"]
    out = [f'<tr id="{name}"><td class="name"><a href="{path}">{name}</a>']
    if i.get("head"):
        out.append(' <span class="head" title="the branch head\'s image">head</span>')
    if i.get("on_demand"):
        out.append(' <span class="on-demand" title="built for a bisect">bisect</span>')
    if "build.log.xz" in files:
        out.append(f' <a class="log" href="{path}build.log.xz" title="the compile step\'s output, '
                   'xz-compressed">build log</a>')
    if "reproducer.sh" in files:
        out.append(f' <a class="reproducer" href="{path}reproducer.sh" title="shell script: rebuild this '
                   'image from the commit on a clean machine">reproducer</a>')
    out.append(f'</td><td class="sha" title="{esc(sha)}">{esc(sha[:12])}</td>'
               f'<td>{esc(subject)}</td><td>{esc(commit_date)}</td>'
               f'<td>{esc(build_date)} ({esc(build)}, {esc(arch)})</td><td class="files">')
    out.append(_SEP.join(_file_link(path, f, info["size"]) for f, info in _by_name(files)))
    out.append('</td><td class="tests">')
    out.append(_SEP.join(
        f'<a class="{escape(r["result"])}" href="{path}tests/{escape(_quote(t))}.log" '
        f'title="{escape(r.get("date", ""))} on {escape(r.get("machine", ""))}">{escape(t)}: {escape(r["result"])}</a>'
        for t, r in _by_name(i.get("tests") or {})))
    out.append("</td></tr>")
    return "".join(out)
