"""Which branch heads still need an image: the reconcile logic behind the "heads" builder (pure).

Buildbot's GitPoller makes no change on its first poll, so a fresh master would never build the heads
that exist when it starts.  The heads builder asks the remote (``git ls-remote``) and builds every head
that has neither a published image nor a recorded failure for the branch's build config.

It also keeps ``<images>/.state/heads.json`` current (:func:`record_head`): the branch heads and the
history order of their images, which the index uses for its order, ``head`` and ``latest``
(docs/index-format.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from buildbot_kernel import gitrepo
from buildbot_kernel.imagetree import branchorder, reserved
from buildbot_kernel.imagetree.package import STATE
from buildbot_kernel.imagetree.scan import branch_images
from buildbot_kernel.ledger import BuildLedger
from buildbot_kernel.naming import safe_branch
from buildbot_kernel.target import BuildTarget

log = logging.getLogger(__name__)


def parse_ls_remote(output: str) -> dict[str, str]:
    """``<sha>\\trefs/heads/<branch>`` lines -> {branch: sha}."""
    heads = {}
    for line in output.splitlines():
        sha, _, ref = line.strip().partition("\t")
        if ref.startswith("refs/heads/") and branchorder.is_sha(sha):  # it becomes a build's revision
            heads[ref[len("refs/heads/"):]] = sha
    return heads


def published_shas(target: BuildTarget) -> set[str]:
    """Shas of this branch's complete images for this build config (an image still being copied in
    does not count: the head is built, and the copy's publish finds it already there)."""
    return {i.sha for i in branch_images(target.branch_dir) if i.build == target.build_name}


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


# ---- the branch's head and the order of its images (heads.json, read by the index) ---------------


def branch_image_shas(target: BuildTarget) -> set[str]:
    """Commits of every image in the branch's directory (any build config: they share one order)."""
    return {i.sha for i in branch_images(target.branch_dir)}


def remote_head(target: BuildTarget, timeout: float = 60) -> str | None:
    """The branch's head as the remote says now, or None when it cannot be asked."""
    try:
        out = gitrepo.ls_remote(target.url, [f"refs/heads/{target.branch}"], timeout=timeout)
    except gitrepo.GitError as e:
        log.warning("cannot ask %s for the head of %s: %s", target.url, target.branch, e.reason)
        return None
    return parse_ls_remote(out).get(target.branch)


def local_repositories(target: BuildTarget) -> list[Path]:
    """Repositories on the master that may hold the branch's history: the poller's, the bisect mirror."""
    from buildbot_kernel.bisect.mirror import mirror_path  # the bisect package imports the engine

    return [target.poller_dir, mirror_path(target.state_dir, target.repository)]


def record_head(target: BuildTarget, head: str | None = None) -> branchorder.BranchState | None:
    """Write the branch's head and its images' history order into ``<root>/.state/heads.json``
    (blocking: git).  ``head`` from the caller's ``ls-remote``, else asked now; when the remote cannot
    be asked, the head recorded before stays.  When no local repository has the head yet, the order
    recorded before stays too (it is still the order of those commits).  Returns what was written."""
    root = Path(target.images_root)
    head = head or remote_head(target)  # before the lock: the remote may take a while to answer
    if not branchorder.is_sha(head):  # what a remote answers is checked like any input
        head = None
    lock = f"{branchorder.HEADS_NAME}.lock"  # in .state, reached without following a symlink
    with reserved.opened(root, STATE, create=True) as state_fd, \
            gitrepo.fd_lock(reserved.open_file(state_fd, lock, str(root / STATE / lock))):
        before = branchorder.HeadsFile(root).load().get(safe_branch(target.branch))
        head = head or (before.head if before else None)
        if head is None:
            return None
        shas = branch_image_shas(target) | {head}
        history = None
        for repo in local_repositories(target):
            if gitrepo.Repo(repo).is_repository():
                try:
                    history = gitrepo.Repo(repo).history_order(head, shas)
                except gitrepo.GitError as e:
                    log.warning("cannot walk the history of %s in %s: %s", target.branch, repo, e.reason)
                if history is not None:
                    break
        if history is None and before is not None:
            history = before.history
        state = branchorder.make_state(target.branch, head, history)
        branchorder.update(root, safe_branch(target.branch), state)
        return state
