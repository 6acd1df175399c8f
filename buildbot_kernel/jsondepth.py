"""How deep JSON from outside may nest.

The parsers nest as deep as the text does (orjson up to 1024 levels, json up to the interpreter's
recursion limit), and the encoders that write it back stop earlier (orjson at 254 levels, json at the
recursion limit), raising where nothing expects it: one image whose metadata.json held a list nested
300 deep made every regeneration of the index fail, for all images.  Nothing we read from outside (an
image's metadata, an index, a result) needs more than a few levels, so what nests deeper than
``MAX_DEPTH`` is refused where it is read, with a message that says so (docs/index-format.md states the
limit for those who write trees and indexes).
"""

from __future__ import annotations

import json
from typing import Any

from buildbot_kernel.errors import BuildbotKernelError

MAX_DEPTH = 32  # objects and arrays inside each other; metadata.json has 3 (files -> name -> size, sha256)


def may_nest_deeper(text: bytes | str, limit: int = MAX_DEPTH) -> bool:
    """False when ``text`` cannot nest deeper than ``limit``: it has no more opening brackets than that.
    Two C-level counts, so the common case never walks the parsed value (brackets inside strings only
    make it answer True more often)."""
    if isinstance(text, bytes):
        return text.count(b"[") + text.count(b"{") > limit
    return text.count("[") + text.count("{") > limit


def deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Does ``value`` (parsed JSON) hold objects or arrays nested more than ``limit`` deep?  Iterative: a
    value as deep as the parser allowed must not exhaust the stack here either."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class TooDeep(BuildbotKernelError, ValueError):
    """JSON from outside that nests deeper than ``MAX_DEPTH``."""


def check_depth(raw: bytes | str, value: Any, what: str, limit: int = MAX_DEPTH) -> Any:
    """``value`` (parsed from ``raw``), or :class:`TooDeep` naming ``what``."""
    if may_nest_deeper(raw, limit) and deeper_than(value, limit):
        raise TooDeep(f"{what} nests objects and arrays deeper than {limit} levels; not one of ours")
    return value


def loads(raw: bytes | str, what: str) -> Any:
    """``json.loads`` for text from outside (a file of the shared tree, a remote server): also a value
    json itself cannot parse for depth, or that nests deeper than ``MAX_DEPTH``, is a ValueError
    (:class:`TooDeep`), so a reader's ``except ValueError`` covers everything such text can do."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise TooDeep(f"{what} nests objects and arrays deeper than this program reads") from None
    return check_depth(raw, value, what)
