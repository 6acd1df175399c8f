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
