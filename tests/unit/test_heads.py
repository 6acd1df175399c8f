"""Reconcile logic of the heads builder (pure)."""

from buildbot_kernel.gitrepo import reason_of as git_error
from buildbot_kernel.heads import parse_ls_remote

SHA1, SHA2 = "a" * 40, "b" * 40


def test_parse_ls_remote_keeps_branch_heads_only():
    out = f"{SHA1}\trefs/heads/drm-tip\n{SHA2}\trefs/heads/topic/x\n{SHA1}\trefs/tags/v6.1\nbogus\n"
    assert parse_ls_remote(out) == {"drm-tip": SHA1, "topic/x": SHA2}


def test_git_error_keeps_the_reason():
    err = ("fatal: unable to access 'https://gitlab.freedesktop.org/drm/i915/kernel.git/': "
           "Could not resolve host: gitlab.freedesktop.org\n")
    assert git_error(err, 128) == "Could not resolve host: gitlab.freedesktop.org"
    assert git_error("", 2) == "git exited with 2"
    assert git_error("fatal: repository '/x' does not exist\n", 128) == "repository '/x' does not exist"


def test_a_head_that_is_no_sha_is_left_out():
    """Any 40 characters counted as a sha, and a head goes to the branch build as its revision (``git
    checkout -f <revision>`` on the worker), where ``--pathspec-from-file=../..//buildbot.tac`` would print
    the worker's password into the build log.  git itself prints only hex ids, so this is the second
    line of defence: the output is checked like any input (record_head already did), a full lowercase
    SHA-1 or SHA-256 only."""
    hostile = "--pathspec-from-file=../..//buildbot.tac"
    assert len(hostile) == 40
    sha256 = "c" * 64
    out = (f"{hostile}\trefs/heads/drm-tip\n{'A' * 40}\trefs/heads/upper\n{'g' * 40}\trefs/heads/g\n"
           f"{SHA2}\trefs/heads/topic/x\n{sha256}\trefs/heads/sha256\n")
    assert parse_ls_remote(out) == {"topic/x": SHA2, "sha256": sha256}
