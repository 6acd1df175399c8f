"""Workers on other hosts: two buildbot-worker processes, each in its own network namespace.

They reach the master's worker port over a veth pair (their own addresses, no loopback) and cannot see
the master's directory (see netns.py), so images reach the tree only through Buildbot's upload step.
Branch builds spread over both; a worker killed with SIGKILL in the middle of a compile leaves no half
image, and its build is retried on the other worker and published exactly once.

The builds are held at points the test controls with fifos: the commit's Makefile runs ``gate.sh`` (in
the tree) before it links the image, and gate.sh blocks reading a fifo until the test opens it.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import subprocess
import tomllib

import pytest

from .harness import FixtureRepo, Master, free_port, git, settings_text, wait_for
from .netns import Namespace, NamespaceWorker, connected, listener_settings, netns_unavailable, worker_tables

pytestmark = [pytest.mark.integration, pytest.mark.netns]
BRANCHES = ("drm-intel-fixes", "drm-intel-next")
SUCCESS, RETRY = 0, 5
IMAGE_RULE = "\t@mkdir -p $(dir $@)\n\t@echo \"  BUILD   $(IMAGE)\"\n"


def gated_commit(repo: FixtureRepo, branch: str, gate_script: str, tag: str) -> str:
    """A commit whose build runs ``gate_script`` in the middle of the compile step."""
    git(repo.work, "checkout", "-q", branch)
    makefile = (repo.work / "Makefile").read_text()
    if "gate.sh" not in makefile:
        assert IMAGE_RULE in makefile
        makefile = makefile.replace(IMAGE_RULE, IMAGE_RULE + "\t@sh $(srctree)/gate.sh\n")
        (repo.work / "Makefile").write_text(makefile)
    (repo.work / "gate.sh").write_text(gate_script)
    (repo.work / "drivers" / "gpu" / f"{tag}.c").write_text(f"int {tag}(void) {{ return 1; }}\n")
    git(repo.work, "add", "-A")
    return repo._commit(f"drm/i915: {tag}")


def release(fifo) -> bool:
    """Open the fifo's writing end once its reader is there (ENXIO until then) and close it: EOF."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return False
        raise
    os.close(fd)
    return True


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("netns")
    base.chmod(0o755)
    repo = FixtureRepo(base, BRANCHES)
    namespaces = [Namespace(1), Namespace(2)]
    workers = []
    master = None
    try:
        for ns in namespaces:
            ns.create()
        ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
        host = namespaces[0].host_addr
        passwords = {f"w{i}": secrets.token_hex(16) for i in (1, 2)}  # not loopback: no example passwords
        server, api_host = listener_settings(host)
        text = settings_text(str(repo.bare), BRANCHES, ports, extra=worker_tables(passwords), worker=False,
                             server_extra=server)
        master = Master(base, text, workers=tuple(passwords), api_host=api_host)
        master.start(ports["web"])
        for (name, password), ns in zip(passwords.items(), namespaces, strict=True):
            w = NamespaceWorker(base, name, password, ns, host, ports["worker"], hidden=master.dir,
                                env={"CCACHE_DISABLE": "1"})
            workers.append(w)
            w.start()
        wait_for(lambda: connected(master) >= {"w1", "w2"}, 60, "both namespace workers to connect")
        wait_for(lambda: finished_kernel_builds(master) >= 2 and master.idle(), 120, "the first head builds")
        yield repo, master, workers, base
    finally:
        for w in workers:
            w.stop()
        if master is not None:
            master.stop()
        for ns in namespaces:
            ns.destroy()


def kernel_builds(master) -> list[dict]:
    heads = master.builder_id("heads")
    return [b for b in master.builds() if b["builderid"] != heads]


def finished_kernel_builds(master) -> int:
    return sum(1 for b in kernel_builds(master) if b["complete"])


def worker_ids(master) -> dict[int, str]:
    return {w["workerid"]: w["name"] for w in master.get("workers")["workers"]}


def published(master, branch) -> dict[str, dict]:
    d = master.dir / "images" / branch
    return {p.name: json.loads((p / "metadata.json").read_text()) for p in d.iterdir()
            if (p / "metadata.json").exists()} if d.is_dir() else {}


def test_workers_connect_from_their_own_addresses(lab):
    _, master, workers, _ = lab
    port = tomllib.loads((master.dir / "settings.toml").read_text())["server"]["worker_port"]
    for w in workers:
        assert w.proc.poll() is None
        # the worker's connection leaves its namespace's own address for the master's lab-side address
        r = subprocess.run(["ip", "netns", "exec", w.ns.name, "ss", "-tnH", "state", "established"],
                           capture_output=True, text=True, timeout=30, check=True)
        assert f"{w.ns.addr}:" in r.stdout and f"{workers[0].ns.host_addr}:{port}" in r.stdout, r.stdout
        # and it cannot see the master's directory (an empty tmpfs covers it in its mount namespace)
        assert os.listdir(master.dir) and os.listdir(f"/proc/{w.proc.pid}/root{master.dir}") == []


def test_branch_builds_spread_over_both_workers(lab):
    """Two branch heads pushed at once are built at the same time, one on each worker."""
    repo, master, _, base = lab
    fifos = {}
    for b in BRANCHES:
        fifos[b] = base / f"spread-{b}.fifo"
        os.mkfifo(fifos[b])
        gated_commit(repo, b, f"cat {fifos[b]} > /dev/null\n", f"spread_{b.replace('-', '_')}")
    for b in BRANCHES:
        repo.push(b)
    # both builds wait in their compile step until released: each holds its worker (max_builds = 1)
    for b in BRANCHES:
        wait_for(lambda b=b: release(fifos[b]), 120, f"the build of {b} to reach its gate")
    heads = {b: repo.head(b) for b in BRANCHES}
    wait_for(lambda: all(any(m["sha"] == heads[b] for m in published(master, b).values()) for b in BRANCHES)
             and master.idle(), 120, "both heads to be published")
    names = worker_ids(master)
    by_sha = {b["properties"]["got_revision"][0]: b for b in kernel_builds(master)
              if "got_revision" in b["properties"]}
    used = {names[by_sha[heads[b]]["workerid"]] for b in BRANCHES}
    assert used == {"w1", "w2"}
    assert all(by_sha[heads[b]]["results"] == SUCCESS for b in BRANCHES)


def test_worker_killed_mid_compile_is_retried_elsewhere_and_published_once(lab):
    repo, master, workers, base = lab
    branch = BRANCHES[0]
    fifo, taken = base / "kill.fifo", base / "kill.taken"
    os.mkfifo(fifo)
    # one-shot gate: the first build to get here takes it and waits; the retry passes straight through
    sha = gated_commit(repo, branch, f"if mkdir {taken} 2>/dev/null; then cat {fifo} > /dev/null; fi\n", "kill_me")
    before = set(published(master, branch))
    repo.push(branch)
    wait_for(taken.exists, 120, "the build to reach the compile step's gate")
    [running] = [b for b in kernel_builds(master) if not b["complete"]]
    compile_step = [s for s in master.steps(running["buildid"]) if s["name"] == "compile"]
    assert compile_step and not compile_step[0]["complete"]  # killed in the middle of the compile
    victim_name = worker_ids(master)[running["workerid"]]
    victim = next(w for w in workers if w.name == victim_name)
    victim.kill()

    def done():
        reqs = master.get(f"buildrequests?buildrequestid={running['buildrequestid']}")["buildrequests"]
        return reqs and reqs[0]["complete"] and master.idle()
    wait_for(done, 120, "the build request to finish on the other worker")
    runs = master.get(f"builds?buildrequestid={running['buildrequestid']}&property=*&order=buildid")["builds"]
    assert [b["results"] for b in runs] == [RETRY, SUCCESS]
    names = worker_ids(master)
    assert names[runs[0]["workerid"]] == victim_name and names[runs[1]["workerid"]] != victim_name
    assert runs[1]["properties"]["got_revision"][0] == sha

    images_dir = master.dir / "images"
    new = {n: m for n, m in published(master, branch).items() if n not in before}
    assert [m["sha"] for m in new.values()] == [sha]  # published exactly once
    half = [p for p in images_dir.glob("*/*") if p.is_dir() and not (p / "metadata.json").exists()
            and not p.parent.name.startswith(".")]
    assert half == []
    assert list((images_dir / ".incoming").glob("*")) == []  # no upload left behind either
    index = json.loads((images_dir / "index.json").read_text())
    assert [e["name"] for e in index["images"]].count(next(iter(new))) == 1
    assert all(e["name"] in published(master, e["branch"]) for e in index["images"])
