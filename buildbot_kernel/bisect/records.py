"""What the bisect builder keeps on disk per bisect, under ``<state>/bisects/<id>/``.

    request.json  the checked request (written once, when the input passed every check)
    bisect.log    git bisect log format: the verdicts, and the resume point after a master restart
    steps.jsonl   one JSON line per finished step (commit, image, verdict, timings) for the result
    pins          image names this running bisect still needs (retention must not delete them)
    result.json   the outcome; its presence means the bisect is finished

A bisect directory exists only for input that passed its checks, so bad input leaves nothing behind.
Appends are fsynced and whole files are replaced atomically, like the image tree's manifests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from buildbot_kernel.bisect import report
from buildbot_kernel.imagetree.atomic import atomic_write

BISECTS = "bisects"
REQUEST, LOG, STEPS, PINS, RESULT = "request.json", "bisect.log", "steps.jsonl", "pins", "result.json"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def bisect_id(buildset_id: int, submitted_at: float) -> str:
    """Stable across the retries of one build request (the same buildset), unique across databases."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(submitted_at))}-bs{buildset_id}"


class BisectDir:
    def __init__(self, state_dir: str | os.PathLike, ident: str):
        if not _ID.match(ident):
            raise ValueError(f"bisect id {ident!r} is not a plain name")
        self.id = ident
        self.path = Path(state_dir) / BISECTS / ident

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def exists(self) -> bool:
        return self.file(REQUEST).is_file()

    @property
    def finished(self) -> bool:
        return self.file(RESULT).is_file()

    def create(self, request: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.file(REQUEST), json.dumps(request, indent=1, sort_keys=True) + "\n")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def request(self) -> dict:
        return json.loads(self.file(REQUEST).read_text())

    def append_step(self, record: dict) -> None:
        fd = os.open(self.file(STEPS), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def steps(self) -> list[dict]:
        try:
            text = self.file(STEPS).read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line from a crash
        return out

    def set_pins(self, names) -> None:
        atomic_write(self.file(PINS), "".join(f"{n}\n" for n in sorted(set(names))))

    def clear_pins(self) -> None:
        try:
            self.file(PINS).unlink()
        except FileNotFoundError:
            pass

    def write_result(self, result: dict) -> None:
        atomic_write(self.file(RESULT), json.dumps(result, indent=1, sort_keys=True) + "\n")
        self.clear_pins()

    def end_unresumable(self, reason: str) -> dict:
        """An interrupted bisect that cannot go on (its request or its mirror lost) gets its result,
        aborted with the steps it recorded, so it stops showing "running" and pinning images."""
        try:
            request = self.request()
        except (OSError, ValueError):
            request = {}  # what could not be read is what ends it
        result = report.result_document(self.id, request, report.ABORTED, self.steps(), reason=reason,
                                        started=self.file(REQUEST).stat().st_mtime if self.exists else None,
                                        finished=time.time())
        self.write_result(result)
        return result


def pinned_images(state_dir: str | os.PathLike) -> set[str]:
    """Names of the images running bisects still need: retention must keep them (README.md, "Images")."""
    root = Path(state_dir) / BISECTS
    out: set[str] = set()
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return out
    for d in entries:
        if (d / RESULT).exists():
            continue
        try:
            out.update(line.strip() for line in (d / PINS).read_text().splitlines() if line.strip())
        except FileNotFoundError:
            continue
    return out
