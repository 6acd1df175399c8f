"""The worker's store script, run as the branch builder's update-store step runs it (sh, real git): it
creates the worker's store, borrows the master's store when it is on this host, fetches the branch, and
converts a checkout made before the store existed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from buildbot_kernel import gitrepo, worker_store
from tests.bisect.history import git, make_history, with_merges


@pytest.fixture
def upstream(tmp_path):
    return make_history(tmp_path / "upstream", with_merges(60, seed=5))


def _run(builddir: Path, url: str, branch: str, master_store: str) -> subprocess.CompletedProcess:
    work = builddir / "work"
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.run(worker_store.command("drm intel", url, branch, master_store), cwd=work,
                          capture_output=True, text=True)


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
    assert run.stdout.strip() == str(store)  # the Git step's reference
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
    store = Path(run.stdout.strip())
    assert gitrepo.alternates(store) == []  # no master store here: a full copy, shared by the builders
    assert git(store, "rev-list", "--count", "main").stdout.strip() == str(len(upstream))
    assert git(store, "config", "gc.pruneExpire").stdout.strip() == "never"
    marker = tmp_path / "pwned"
    hostile = _run(builddir, url, f"main; touch {marker}", f"$(touch {marker})")
    assert hostile.returncode != 0 and not marker.exists()  # a bad ref name fails the fetch, runs nothing
