"""Which branch heads still need an image: the reconcile logic behind the "heads" builder (pure).

Buildbot's GitPoller makes no change on its first poll, so a fresh master would never build the heads
that exist when it starts.  The heads builder asks the remote (``git ls-remote``) and builds every head
that has neither a published image nor a recorded failure for the branch's build config.
"""

from __future__ import annotations

import json

from buildbot_kernel.ledger import BuildLedger
from buildbot_kernel.target import BuildTarget


def parse_ls_remote(output: str) -> dict[str, str]:
    """``<sha>\\trefs/heads/<branch>`` lines -> {branch: sha}."""
    heads = {}
    for line in output.splitlines():
        sha, _, ref = line.strip().partition("\t")
        if ref.startswith("refs/heads/") and len(sha) == 40:
            heads[ref[len("refs/heads/"):]] = sha
    return heads


def published_shas(target: BuildTarget) -> set[str]:
    """Shas of this branch's images for this build config, read from their metadata."""
    shas = set()
    if not target.branch_dir.is_dir():
        return shas
    for meta in target.branch_dir.glob("*/metadata.json"):
        try:
            m = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if m.get("build") == target.build_name:
            shas.add(m.get("sha"))
    return shas


def needs_build(target: BuildTarget, sha: str) -> str | None:
    """None when the head is covered, else the reason to build it (shown in the heads build log)."""
    rec = BuildLedger(target.ledger_path).get(target.repository, target.branch, sha, target.build_name)
    if rec is not None:
        return None
    if sha in published_shas(target):
        return None
    return f"{target.branch} head {sha[:12]} has no image for build config {target.build_name!r}"


def missing_branches(targets: list[BuildTarget], heads: dict[str, str]) -> list[str]:
    return [t.branch for t in targets if t.branch not in heads]
