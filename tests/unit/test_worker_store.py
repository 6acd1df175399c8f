"""The worker's store and checkout script, run as the branch builder's update-tree step runs it (sh, real
git): it creates the worker's store, borrows the master's store when it is on this host, fetches the
branch, converts a checkout made before the store existed, and checks out the build's commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from buildbot_kernel import gitrepo, worker_store
from buildbot_kernel.steps.checkout import parse_checkout
from tests.bisect.history import git, make_history, with_merges


@pytest.fixture
def upstream(tmp_path):
    return make_history(tmp_path / "upstream", with_merges(60, seed=5))


def _run(builddir: Path, url: str, branch: str, master_store: str, revision: str | None = None
         ) -> subprocess.CompletedProcess:
    work = builddir / "work"
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.run(worker_store.checkout_command("drm intel", url, branch, master_store, revision),
                          cwd=work, capture_output=True, text=True)


def _out(run: subprocess.CompletedProcess) -> dict[str, str]:
    return parse_checkout(run.stdout)


def test_store_borrows_the_masters_and_the_old_checkout_is_converted(upstream, tmp_path):
    url = upstream.path.as_uri()
    master_store = gitrepo.update_mirror(tmp_path / "master" / "drm.git", url)
    worker = tmp_path / "worker"
    builddir = worker / "drm-tip"
    git(tmp_path, "clone", "-q", url, str(builddir / "work" / "src"))  # a checkout from before the store
    full = git(builddir / "work" / "src", "count-objects", "-v").stdout
    run = _run(builddir, url, "main", str(master_store))
    assert run.returncode == 0, run.stderr
    store = (worker / "git-stores" / "drm_intel.git").resolve()
    assert _out(run) == {"store": str(store), "got_revision": upstream.shas[-1]}
    assert gitrepo.alternates(store) == [str((master_store / "objects").resolve())]
    assert git(store, "rev-parse", "refs/heads/main").stdout.strip() == upstream.shas[-1]
    checkout = builddir / "work" / "src"
    assert gitrepo.alternates(checkout) == [str(store / "objects")]
    assert git(checkout, "count-objects", "-v").stdout != full
    assert "size-pack: 0" in git(checkout, "count-objects", "-v").stdout  # its own copy is gone
    assert git(checkout, "fsck", "--connectivity-only", check=False).returncode == 0
    again = _run(builddir, url, "main", str(master_store))  # idempotent: nothing added twice
    assert again.returncode == 0 and gitrepo.alternates(checkout) == [str(store / "objects")]
    assert gitrepo.alternates(store) == [str((master_store / "objects").resolve())]


def test_a_remote_host_keeps_its_own_store_and_values_stay_arguments(upstream, tmp_path):
    url = upstream.path.as_uri()
    builddir = tmp_path / "worker" / "drm-tip"
    run = _run(builddir, url, "main", str(tmp_path / "not-on-this-host.git"))
    assert run.returncode == 0, run.stderr
    store = Path(_out(run)["store"])
    assert gitrepo.alternates(store) == []  # no master store here: a full copy, shared by the builders
    assert git(store, "rev-list", "--count", "main").stdout.strip() == str(len(upstream))
    assert git(store, "config", "gc.pruneExpire").stdout.strip() == "never"
    marker = tmp_path / "pwned"
    hostile = _run(builddir, url, f"main; touch {marker}", f"$(touch {marker})")
    assert hostile.returncode != 0 and not marker.exists()  # a bad ref name fails the fetch, runs nothing


def test_the_checkout_borrows_the_store_and_checks_out_the_revision_asked_for(upstream, tmp_path):
    url = upstream.path.as_uri()
    builddir = tmp_path / "worker" / "drm-tip"
    old = upstream.shas[10]
    run = _run(builddir, url, "main", str(tmp_path / "no-master-store.git"), old)
    assert run.returncode == 0, run.stderr
    checkout = builddir / "work" / "src"
    assert _out(run)["got_revision"] == old
    assert git(checkout, "rev-parse", "HEAD").stdout.strip() == old
    assert git(checkout, "symbolic-ref", "HEAD").stdout.strip() == "refs/heads/main"  # the branch, as Git's step
    assert gitrepo.alternates(checkout) == [_out(run)["store"] + "/objects"]
    assert "size-pack: 0" in git(checkout, "count-objects", "-v").stdout  # every object is the store's
    (checkout / "dirty").write_text("left by an earlier build\n")
    head = _run(builddir, url, "main", str(tmp_path / "no-master-store.git"))  # no revision: the head
    assert head.returncode == 0, head.stderr
    assert _out(head)["got_revision"] == upstream.shas[-1]
    assert git(checkout, "status", "--porcelain", "--untracked-files=no").stdout == ""


def test_a_store_that_cannot_be_updated_leaves_the_checkout_to_fetch_on_its_own(upstream, tmp_path):
    url = upstream.path.as_uri()
    builddir = tmp_path / "worker" / "drm-tip"
    stores = tmp_path / "worker" / "git-stores"
    stores.mkdir(parents=True)
    (stores / "drm_intel.git").write_text("not a repository\n")  # the store cannot be made
    run = _run(builddir, url, "main", str(tmp_path / "no-master-store.git"))
    assert run.returncode == 0, run.stderr
    assert _out(run) == {"store": "", "got_revision": upstream.shas[-1]}
    assert "the checkout fetches on its own" in run.stderr


def test_a_revision_that_git_would_read_as_an_option_is_refused(upstream, tmp_path):
    run = _run(tmp_path / "worker" / "drm-tip", upstream.path.as_uri(), "main", str(tmp_path / "none.git"),
               "--output=/tmp/x")
    assert run.returncode == 2 and "starts with '-'" in run.stderr
    assert "got_revision" not in _out(run)
