"""The git seam: its environment policy reaches real git (SSH settings kept, repository pointers dropped),
hostile revisions and URLs are refused, git's own answers come back unchanged, and the mirror clone
reports progress and is locked across processes.  No network: the SSH "remote" is a script that fails."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from buildbot_kernel import gitrepo, target
from buildbot_kernel.bisect import mirror
from buildbot_kernel.bisect.engine import BisectInputError
from buildbot_kernel.gitrepo import GitError, Repo, git_env, reason_of
from tests.bisect.history import git, make_history, random_dag, with_merges

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("merged") / "repo", with_merges(90, seed=3))


@pytest.fixture
def ssh_script(tmp_path, monkeypatch):
    """GIT_SSH_COMMAND that records its call (arguments and the SSH settings it saw) and fails at once."""
    marker = tmp_path / "ssh-called"
    script = tmp_path / "fake-ssh"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        printf 'args=%s\\nsock=%s\\nhome=%s\\n' "$*" "$SSH_AUTH_SOCK" "$HOME" >> {marker}
        echo "ssh: connect to host example.invalid port 22: refused by the test script" >&2
        exit 255
        """))
    script.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(script))
    monkeypatch.setenv("GIT_SSH_VARIANT", "ssh")
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return marker


# ---- the environment policy ------------------------------------------------------------------------


def test_env_policy_keeps_ssh_and_config_and_drops_repository_pointers():
    caller = {
        "HOME": "/home/k", "PATH": "/usr/bin", "SSH_AUTH_SOCK": "/run/agent", "https_proxy": "http://proxy:3128",
        "GIT_SSH": "/usr/bin/ssh", "GIT_SSH_COMMAND": "ssh -i key", "GIT_ASKPASS": "/bin/askpass",
        "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": "X: y",
        "GIT_CONFIG_GLOBAL": "/etc/k.gitconfig",
        "GIT_DIR": "/elsewhere/.git", "GIT_WORK_TREE": "/elsewhere", "GIT_INDEX_FILE": "/elsewhere/index",
        "GIT_OBJECT_DIRECTORY": "/o", "GIT_ALTERNATE_OBJECT_DIRECTORIES": "/a", "GIT_COMMON_DIR": "/c",
        "GIT_NAMESPACE": "ns", "GIT_CEILING_DIRECTORIES": "/", "GIT_TERMINAL_PROMPT": "1",
    }
    env = git_env(caller)
    for kept in ("HOME", "PATH", "SSH_AUTH_SOCK", "https_proxy", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS",
                 "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0", "GIT_CONFIG_GLOBAL"):
        assert env[kept] == caller[kept], kept
    for dropped in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES"):
        assert dropped not in env, dropped
    assert env["GIT_TERMINAL_PROMPT"] == "0"


def test_policy_reaches_git_repository_pointers_are_ignored_config_is_kept(merged, tmp_path, monkeypatch):
    other = make_history(tmp_path / "other", [()])
    monkeypatch.setenv("GIT_DIR", str(other.path / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other.path))
    monkeypatch.setenv("GIT_OBJECT_DIRECTORY", str(tmp_path / "no-objects"))
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "bk.probe")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "kept")
    repo = Repo(merged.path)
    assert repo.resolve("main") == merged.shas[-1] != other.shas[0]
    assert repo.commit_info(merged.shas[5]).subject == "c5"
    assert repo.run("config", "--get", "bk.probe")[1].strip() == "kept"


def test_ssh_remote_environment_reaches_git_and_the_error_is_gits(ssh_script, tmp_path):
    url = "ssh://example.invalid/x.git"
    with pytest.raises(GitError) as e:
        gitrepo.ls_remote(url, ["refs/heads/main"])
    seen = ssh_script.read_text()
    assert "example.invalid" in seen and "git-upload-pack" in seen
    assert f"sock={tmp_path / 'agent.sock'}\n" in seen and f"home={tmp_path}\n" in seen
    assert e.value.reason == "ssh: connect to host example.invalid port 22: refused by the test script"
    assert "Could not read from remote repository" in e.value.stderr


def test_ssh_remote_for_the_mirror_fails_as_the_bisect_target(ssh_script, tmp_path):
    url = "ssh://example.invalid/x.git"
    with pytest.raises(BisectInputError) as e:
        mirror.update_mirror(tmp_path / "state", "drm-intel", url)
    assert ssh_script.is_file()
    assert e.value.field == "target"
    assert e.value.message == (f"cannot fetch {url}: "
                               "ssh: connect to host example.invalid port 22: refused by the test script")
    assert not mirror.mirror_path(tmp_path / "state", "drm-intel").exists()


def test_reason_is_gits_last_line_without_the_advice():
    ssh = ("ssh: Could not resolve hostname example.invalid: Name or service not known\n"
           "fatal: Could not read from remote repository.\n\n"
           "Please make sure you have the correct access rights\nand the repository exists.\n")
    assert reason_of(ssh, 128) == "ssh: Could not resolve hostname example.invalid: Name or service not known"
    assert reason_of("fatal: Could not read from remote repository.\n", 128) == \
        "Could not read from remote repository."
    assert reason_of("", 2) == "git exited with 2"


# ---- hostile input ---------------------------------------------------------------------------------


def test_revision_that_would_be_an_option_is_refused(merged, tmp_path):
    repo = Repo(merged.path)
    out = tmp_path / "written"
    for rev in ("-h", f"--output={out}", "--all", ""):
        assert repo.resolve(rev) is None
    assert not out.exists()
    good, bad = merged.shas[3], merged.shas[40]
    with pytest.raises(GitError, match="starts with '-'"):
        repo.is_ancestor("--all", bad)
    with pytest.raises(GitError, match="starts with '-'"):
        repo.bisect_all(f"--output={out}", [good])
    with pytest.raises(GitError, match="starts with '-'"):
        repo.bisect_all(bad, ["-n1"])
    with pytest.raises(GitError, match="starts with '-'"):
        repo.commit_info("--help")
    assert not out.exists()


def test_url_that_would_be_an_option_or_run_a_command_is_refused(tmp_path):
    pwned = tmp_path / "pwned"
    for url in (f"--upload-pack=touch {pwned}", f"ext::sh -c touch% {pwned}"):
        with pytest.raises(GitError):
            gitrepo.ls_remote(url)
        with pytest.raises(GitError):
            gitrepo.update_mirror(tmp_path / "m.git", url)
    assert not pwned.exists()


def test_git_failure_carries_gits_reason(merged):
    with pytest.raises(GitError) as e:
        Repo(merged.path).commit_info("0" * 40)
    assert e.value.status == 128 and "0" * 40 in e.value.reason
    assert str(e.value).startswith("git show failed: ")


# ---- git's own answers -----------------------------------------------------------------------------


def _direct(path: Path, *args: str) -> str:
    return git(path, *args).stdout


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bisect_all_and_bisect_are_gits_output(tmp_path, seed):
    h = make_history(tmp_path / "repo", random_dag(random.Random(seed), 80))
    rng = random.Random(seed)
    repo = Repo(h.path)
    for _ in range(5):
        bad = rng.randrange(40, len(h))
        goods = [h.shas[g] for g in rng.sample(sorted(h.ancestors(bad) - {bad}), 2)]
        spec = [h.shas[bad], *[f"^{g}" for g in goods], "--"]
        direct = [(m[1], int(m[2])) for m in re.finditer(r"^([0-9a-f]{40}) .*dist=(\d+)\)$",
                                                        _direct(h.path, "rev-list", "--bisect-all", *spec), re.M)]
        assert direct and [(c.sha, c.dist) for c in repo.bisect_all(h.shas[bad], goods)] == direct
        assert repo.bisect_pick(h.shas[bad], goods) == _direct(h.path, "rev-list", "--bisect", *spec).strip()
        assert repo.range_commits(h.shas[bad], goods) == tuple(
            _direct(h.path, "rev-list", "--topo-order", "--reverse", *spec).split())


# ---- the mirror ------------------------------------------------------------------------------------


def test_mirror_clone_reports_progress_then_fetches_and_prunes(merged, tmp_path):
    src = tmp_path / "src"
    git(tmp_path, "clone", "-q", str(merged.path), str(src))
    git(src, "branch", "topic", merged.shas[10])
    lines: list[str] = []
    path = gitrepo.update_mirror(tmp_path / "mirrors" / "k.git", f"file://{src}", lines.append)
    assert lines[0].startswith(f"cloning file://{src} into the mirror ")
    assert any(re.match(r"Receiving objects: +\d+% \(\d+/\d+\)", ln) for ln in lines), lines
    assert lines[-1] == "mirror up to date"
    mirrored = Repo(path)
    assert mirrored.resolve("main") == merged.shas[-1] and mirrored.resolve("topic") == merged.shas[10]
    assert not (tmp_path / "mirrors" / "k.git.tmp").exists()

    git(src, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "new")
    git(src, "branch", "-D", "topic")
    new = git(src, "rev-parse", "HEAD").stdout.strip()
    lines.clear()
    gitrepo.update_mirror(path, f"file://{src}", lines.append)
    assert lines[0] == f"fetching file://{src} into the mirror {path}"
    assert mirrored.resolve("main") == new and mirrored.resolve("topic") is None


def test_mirror_lock_is_held_across_processes(tmp_path):
    """A second process waits while a first one holds the mirror's lock, and gets it once it is let go."""
    path = tmp_path / "mirrors" / "k.git"
    code = textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from buildbot_kernel.gitrepo import path_lock
        with path_lock(Path({str(path)!r}), lambda: print("waiting", flush=True)):
            print("locked", flush=True)
            sys.stdin.readline()
        print("released", flush=True)
        """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start():
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env)

    first = start()
    try:
        assert first.stdout.readline() == "locked\n"
        second = start()
        try:
            assert second.stdout.readline() == "waiting\n"  # it cannot have the lock while the first holds it
            first.stdin.write("\n")
            first.stdin.flush()
            assert first.stdout.readline() == "released\n"
            assert second.stdout.readline() == "locked\n"
            second.stdin.write("\n")
            second.stdin.flush()
            assert second.wait(30) == 0
        finally:
            second.kill()
        assert first.wait(30) == 0
    finally:
        first.kill()


def _objects_bytes(repo: Path) -> int:
    return sum(f.stat().st_size for f in repo.rglob("*") if f.is_file() and "objects" in f.parts)


def test_the_mirror_is_a_store_the_poller_borrows_and_it_never_prunes(merged, tmp_path):
    state = tmp_path / "state"
    poller = target.poller_dir(state, "drm intel")
    assert poller == state / "gitpoller" / "drm_intel"
    git(tmp_path, "clone", "-q", "--bare", merged.path.as_uri(), str(poller))  # the poller's own full copy
    before = _objects_bytes(poller)
    lines: list[str] = []
    store = mirror.update_mirror(state, "drm intel", merged.path.as_uri(), lines.append)
    assert lines[-1] == "mirror up to date" and any("now borrows the objects of" in ln for ln in lines)
    assert gitrepo.alternates(poller) == [str((store / "objects").resolve())]
    assert gitrepo.alternates(store) == []  # seeded from the poller's copy, then self-contained
    assert git(store, "fsck", "--connectivity-only", check=False).returncode == 0
    assert _objects_bytes(poller) < before / 4  # its copies are gone ...
    assert git(poller, "rev-list", "--count", "--all").stdout.strip() == str(len(merged))  # ... yet all there
    assert git(poller, "fsck", "--connectivity-only", check=False).returncode == 0
    assert not gitrepo.borrow(poller, store)  # once only
    # a gc of the store never deletes an object, reachable or not: a borrower may need it
    assert git(store, "config", "gc.pruneExpire").stdout.strip() == "never"
    lost = git(store, "commit-tree", "-m", "only a borrower knows me", f"{merged.shas[3]}^{{tree}}").stdout.strip()
    loose = store / "objects" / lost[:2] / lost[2:]
    os.utime(loose, (1_000_000_000, 1_000_000_000))  # older than any default expiry
    git(store, "gc", "-q")
    assert git(store, "cat-file", "-e", lost, check=False).returncode == 0


def test_borrowing_a_store_that_is_not_there_is_refused(merged, tmp_path):
    with pytest.raises(GitError, match="no object directory"):
        gitrepo.borrow(merged.path, tmp_path / "nothing.git")
    assert gitrepo.alternates(merged.path) == []
