"""Capabilities kept as data: a directory of small ``<name>.ini`` descriptions, one per package format or
machine type, read when asked (a few files, no cache to go stale).  docs/package-formats.md and
docs/machine-types.md say how to add one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def read_all(directory: Path, load: Callable[[Path], T]) -> dict[str, T]:
    """Every description of ``directory`` by name (the file's stem), in name order."""
    return {p.stem: load(p) for p in sorted(directory.glob("*.ini"))}


def pick(found: dict[str, T], name: str, error: type[Exception], what: str) -> T:
    """``found[name]``, or ``error`` naming what is known (the settings key's fix)."""
    try:
        return found[name]
    except KeyError:
        raise error(f"no {what} {name!r}; known: {', '.join(found)}") from None
