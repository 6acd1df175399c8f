"""Branch order, head and latest: a generated git history (real commits, merges), images built in a
scrambled order (as a bisect builds old commits after new ones), the master's head record
(``heads.record_head``: ls-remote + ``rev-list`` in the poller's repository) and the index it feeds."""

from __future__ import annotations

import json
import random
import subprocess
from datetime import timedelta

import pytest

from buildbot_kernel import gitrepo, heads
from buildbot_kernel.imagetree import branchorder
from buildbot_kernel.imagetree.index import TreeIndex
from buildbot_kernel.imagetree.package import publish, staging_dir, write_manifest
from buildbot_kernel.imagetree.testing import EPOCH, fake_sha, image_fields, write_payload
from buildbot_kernel.settings import Build
from buildbot_kernel.target import BuildTarget
from buildbot_kernel.utctime import iso_utc as iso
from tests.bisect.history import make_history, with_merges

BASE = "http://images.example.org/"
BUILD = Build(name="x86_64", arch="x86_64", config="defconfig")


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("hist") / "upstream", with_merges(80, seed=5))


@pytest.fixture
def setup(tmp_path, history):
    """(tree, target): the target's "remote" is the generated repository, its poller repository a clone."""
    tree, state = tmp_path / "images", tmp_path / "state"
    tree.mkdir()
    target = BuildTarget(repository="fixture", url=str(history.path), branch="main", build=BUILD,
                         images_root=str(tree), state_dir=str(state))
    target.poller_dir.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(history.path), str(target.poller_dir)], check=True)
    return tree, target


def add_image(tree, sha: str, commit_hours: int, build_hours: int, on_demand: bool = False, branch: str = "main"):
    f = image_fields(branch, commit_hours, sha=sha)
    f["build_date"] = iso(EPOCH + timedelta(hours=build_hours))
    f["on_demand"] = on_demand
    stage = staging_dir(tree)
    write_payload(stage, seed=sha)
    write_manifest(stage, f)
    publish(stage, tree, branch, f["name"])
    return f["name"]


def branch_index(tree, branch_dir="main"):
    return json.loads((tree / branch_dir / "index.json").read_text())["images"]


def latest(tree, branch_dir="main"):
    p = tree / branch_dir / "latest"
    return p.read_text().strip() if p.exists() else None


def test_order_follows_the_history_not_the_dates(setup, history):
    """A bisect built old commits (merged topic commits too) long after the head: the index lists the head
    first and then the history's order; commit and build dates are both scrambled, so neither can pass."""
    tree, target = setup
    rng = random.Random(11)
    head = len(history) - 1
    nodes = sorted(rng.sample(range(1, head), 16)) + [head]
    names = {}
    for k, node in enumerate(nodes):
        names[node] = add_image(tree, history.shas[node], commit_hours=100 - k, build_hours=rng.randint(0, 500),
                                on_demand=(node != head and k % 2 == 0))
    gone = add_image(tree, fake_sha("rebased away"), commit_hours=900, build_hours=900)  # not on the history
    state = heads.record_head(target)
    assert state.head == history.shas[head] and len(state.history) == len(nodes)
    TreeIndex(tree, BASE).regenerate()
    entries = branch_index(tree)
    by_sha = {s: i for i, s in enumerate(history.shas)}
    order = [by_sha.get(e["sha"]) for e in entries]
    assert order[0] == head and entries[0]["head"] is True
    assert [e["name"] for e in entries if e["head"]] == [names[head]]
    assert entries[-1]["name"] == gone and order[-1] is None  # off the history: last
    listed = order[:-1]
    for a in range(len(listed)):  # never an ancestor before its descendant
        for b in range(a + 1, len(listed)):
            assert listed[a] not in history.ancestors(listed[b]), (listed[a], listed[b])
    assert latest(tree) == names[head]
    on_demand = {e["name"] for e in entries if e["on_demand"]}
    assert on_demand and names[head] not in on_demand
    root = json.loads((tree / "index.json").read_text())["images"]
    assert [e["name"] for e in root] == [e["name"] for e in entries]  # one branch: the same order


def test_latest_is_the_newest_image_on_the_history_when_the_head_has_none(setup, history):
    tree, target = setup
    head = len(history) - 1
    older = add_image(tree, history.shas[10], commit_hours=1, build_hours=1)
    add_image(tree, history.shas[40], commit_hours=2, build_hours=50, on_demand=True)  # newer, for a bisect
    add_image(tree, fake_sha("force-pushed away"), commit_hours=80, build_hours=80)  # newest, off the history
    middle = add_image(tree, history.shas[30], commit_hours=3, build_hours=3)
    heads.record_head(target)
    index = TreeIndex(tree, BASE)
    index.regenerate()
    assert latest(tree) == middle  # not the on-demand image, not the one off the history, not `older`
    assert not any(e["head"] for e in branch_index(tree))
    assert [e["name"] for e in branch_index(tree)][2] == older
    # the head's image arrives (built by a bisect, even): it is latest and marked
    head_name = add_image(tree, history.shas[head], commit_hours=0, build_hours=0, on_demand=True)
    heads.record_head(target)
    index.regenerate()
    assert latest(tree) == head_name
    assert [e["name"] for e in branch_index(tree) if e["head"]] == [head_name]


def test_only_bisect_images_give_no_latest(setup, history):
    tree, target = setup
    add_image(tree, history.shas[20], commit_hours=1, build_hours=1, on_demand=True)
    heads.record_head(target)
    TreeIndex(tree, BASE).regenerate()
    assert (tree / "main" / "index.json").exists() and latest(tree) is None


def test_a_new_head_rewrites_the_branch_files_and_nothing_else(setup, history):
    tree, target = setup
    a = add_image(tree, history.shas[50], commit_hours=1, build_hours=1)
    b = add_image(tree, history.shas[60], commit_hours=2, build_hours=2)
    add_image(tree, fake_sha("other"), commit_hours=3, build_hours=3, branch="other")
    heads.record_head(target, history.shas[60])
    index = TreeIndex(tree, BASE)
    index.regenerate()
    assert latest(tree) == b and index.regenerate().written == []  # unchanged state: nothing rewritten
    heads.record_head(target, history.shas[50])  # the branch was reset to an older commit
    res = index.regenerate()
    assert latest(tree) == a and branch_index(tree)[0]["name"] == a and branch_index(tree)[0]["head"]
    assert not any(w.startswith("other/") for w in res.written)


def test_no_heads_state_orders_by_commit_date_and_skips_bisect_images(tmp_path):
    tree = tmp_path / "images"
    tree.mkdir()
    new = add_image(tree, fake_sha(1), commit_hours=5, build_hours=1)
    add_image(tree, fake_sha(2), commit_hours=9, build_hours=9, on_demand=True)
    add_image(tree, fake_sha(3), commit_hours=2, build_hours=20)  # built last, but an older commit
    TreeIndex(tree, BASE).regenerate()
    assert [e["sha"] for e in branch_index(tree)] == [fake_sha(2), fake_sha(1), fake_sha(3)]
    assert latest(tree) == new and not any(e["head"] for e in branch_index(tree))


@pytest.mark.parametrize("text", [
    "not json", '{"schema": 2, "branches": {}}', '{"schema": 1, "branches": []}',
    '{"schema": 1, "branches": {"main": {"branch": "main", "head": "../../etc", "history": null}}}',
    '{"schema": 1, "branches": {"main": {"branch": "main", "head": "%s", "history": "abc"}}}' % ("a" * 40),
    '{"schema": 1, "branches": {"main": {"branch": "main", "head": "%s", "history": [1, 2]}}}' % ("a" * 40),
])
def test_a_damaged_heads_file_counts_as_absent(tmp_path, text):
    tree = tmp_path / "images"
    tree.mkdir()
    newest = add_image(tree, fake_sha(1), commit_hours=5, build_hours=1)
    add_image(tree, fake_sha(2), commit_hours=2, build_hours=7)
    (tree / ".state").mkdir()
    (tree / branchorder.HEADS_FILE).write_text(text)
    TreeIndex(tree, BASE).regenerate()
    assert latest(tree) == newest and not any(e["head"] for e in branch_index(tree))


def test_history_order_of_a_head_not_fetched_yet_is_unknown(history):
    repo = gitrepo.Repo(history.path)
    assert repo.history_order(fake_sha("unknown"), history.shas[:3]) is None
    got = repo.history_order(history.shas[30], [history.shas[i] for i in (2, 29, 30, 31, 70)])
    assert got[0] == history.shas[30] and history.shas[2] in got and history.shas[70] not in got
    assert history.shas[31] not in got  # a later commit is not in the history of 30


def test_retention_keeps_the_head_after_a_bisect_built_older_commits(setup, history):
    """keep_per_branch counts in the branch's order: three bisect images built after the head's image
    do not push the head out (in build date order they would)."""
    from buildbot_kernel.imagetree.tree import ImageTree

    tree, target = setup
    head = len(history) - 1
    head_name = add_image(tree, history.shas[head], commit_hours=50, build_hours=1)
    bisect = [add_image(tree, history.shas[n], commit_hours=n, build_hours=10 + n, on_demand=True)
              for n in (20, 30, 40)]
    heads.record_head(target)
    ImageTree(tree, BASE, keep_per_branch=2).published()
    kept = [e["name"] for e in branch_index(tree)]
    assert kept == [head_name, bisect[2]] and latest(tree) == head_name
    assert not (tree / "main" / bisect[0]).exists()


def test_a_head_that_is_not_a_commit_id_is_not_recorded(setup, history):
    tree, target = setup
    heads.record_head(target, history.shas[40])
    assert heads.record_head(target, "HEAD~3" + "0" * 34).head == history.shas[40]  # the recorded one stays
    state = branchorder.HeadsFile(tree).load()["main"]
    assert state.head == history.shas[40]


def test_only_a_true_on_demand_counts_and_pages_show_the_marks(setup, history):
    """``on_demand`` is what the publish step writes (a JSON true); a hand-written "yes" is not."""
    tree, target = setup
    head = len(history) - 1
    head_name = add_image(tree, history.shas[head], commit_hours=9, build_hours=1)
    odd = add_image(tree, history.shas[40], commit_hours=5, build_hours=5)
    meta_path = tree / "main" / odd / "metadata.json"
    fields = json.loads(meta_path.read_text())
    fields["on_demand"] = "yes"
    for n in ("metadata.json", "SHA256SUMS"):
        (tree / "main" / odd / n).unlink()
    write_manifest(tree / "main" / odd, fields)
    bisect = add_image(tree, history.shas[30], commit_hours=3, build_hours=3, on_demand=True)
    heads.record_head(target)
    TreeIndex(tree, BASE).regenerate()
    marks = {e["name"]: (e["head"], e["on_demand"]) for e in branch_index(tree)}
    assert marks == {head_name: (True, False), odd: (False, False), bisect: (False, True)}
    page = (tree / "main" / "index.html").read_text()
    row = {n: page[page.index(f'<tr id="{n}">'):].split("</tr>")[0] for n in marks}
    assert 'class="head"' in row[head_name] and 'class="on-demand"' in row[bisect]
    assert 'class="head"' not in row[odd] + row[bisect] and 'class="on-demand"' not in row[odd] + row[head_name]
