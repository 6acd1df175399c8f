"""The watchdog observer on a real directory tree (inotify): deletions, slow copies, bursts, no loops."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from buildbot_kernel.imagetree.package import write_manifest
from buildbot_kernel.imagetree.testing import image_fields, make_image, write_payload
from buildbot_kernel.imagetree.tree import ImageTree
from buildbot_kernel.imagetree.watcher import TreeWatcher, relevant_path

# watchdog warns when a watched directory is renamed inside the tree (each publish); see watcher.py
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")



def listed(root):
    try:
        return [e["name"] for e in json.loads((root / "index.json").read_text())["images"]]
    except FileNotFoundError:
        return []


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def watched(tmp_path):
    root = tmp_path / "images"
    tree = ImageTree(root, "http://h/")
    results = []
    tree.listeners.append(results.append)
    watchers = []

    def start(debounce=0.2, **kw):
        tree.regenerate()
        w = TreeWatcher(root, tree.regenerate, debounce=debounce, **kw)
        w.start()
        watchers.append(w)
        return w

    yield root, tree, start, results
    for w in watchers:
        w.stop()


@pytest.mark.parametrize("observer", [{}, {"polling": True, "poll_interval": 0.5}], ids=["inotify", "poll"])
def test_deleted_directory_leaves_the_index_within_2s(watched, observer):
    root, tree, start, _ = watched
    a = make_image(root, "b", 1)
    b = make_image(root, "b", 2)
    start(**observer)
    assert listed(root) == [b.name, a.name]
    t0 = time.monotonic()
    shutil.rmtree(b)
    t1 = wait_for(lambda: listed(root) == [a.name], 2.0, "deleted image gone from index.json")
    assert t1 - t0 < 2.0
    assert (root / "b" / "latest").read_text().strip() == a.name


def test_slow_copy_is_listed_only_once_complete(watched, tmp_path):
    root, tree, start, _ = watched
    source = tmp_path / "source"
    source.mkdir()
    fields = image_fields("b", 5)
    write_payload(source, sizes={"vmlinuz": 300_000})
    write_manifest(source, fields)
    w = start()
    target = root / "b" / fields["name"]
    target.mkdir(parents=True)
    # the manifests first (the worst order), then each payload file in pieces
    order = ["metadata.json", "SHA256SUMS", "config", "System.map", "modules.tar.xz", "vmlinuz"]
    for n, fname in enumerate(order):
        data = (source / fname).read_bytes()
        pieces = [data[i:i + 100_000] for i in range(0, len(data), 100_000)] or [b""]
        for k, piece in enumerate(pieces):
            before = w.regenerations
            with open(target / fname, "ab") as f:
                f.write(piece)
            last = n == len(order) - 1 and k == len(pieces) - 1
            if not last:
                wait_for(lambda b=before: w.regenerations > b, 5.0, f"a regeneration after writing {fname}")
                assert fields["name"] not in listed(root), f"listed while {fname} was incomplete"
    wait_for(lambda: fields["name"] in listed(root), 5.0, "the complete copy listed")


def test_burst_makes_one_regeneration(watched, tmp_path):
    root, tree, start, _ = watched
    src = make_image(tmp_path / "elsewhere", "b", 1)
    w = start(debounce=0.5)
    before = w.regenerations
    shutil.copytree(src, root / "b" / src.name)  # a dozen events in a few milliseconds
    wait_for(lambda: src.name in listed(root), 5.0, "copied image listed")
    wait_for(lambda: w.regenerations > before, 5.0, "regeneration counted")
    assert w.regenerations - before == 1


def test_publish_and_watcher_do_not_loop(watched):
    root, tree, start, results = watched
    w = start()
    fields = image_fields("b", 1)
    stage = tree.staging_dir()
    write_payload(stage)
    write_manifest(stage, fields)
    tree.publish(stage, "b", fields["name"])
    assert fields["name"] in listed(root)  # the publish itself regenerated
    wait_for(lambda: w.regenerations >= 1, 5.0, "the watcher saw the rename")
    # the watcher's regeneration found nothing to write, so it caused no further events
    assert results[-1].written == []


@pytest.mark.parametrize("rel,expected", [
    ("b/img/vmlinuz", True), ("b/img", True), ("b", True),
    ("index.json", False), ("index.html", False), ("b/index.json", False), ("b/latest", False),
    ("b/img/index.html", True),  # inside an image, an ordinary file
    (".incoming/x/vmlinuz", False), (".trash/x", False), ("b/.tmp-index.json.abc", False),
    ("b/img/.vmlinuz.rsync-tmp", False),
])
def test_relevant_paths(tmp_path, rel, expected):
    assert relevant_path(str(tmp_path), str(tmp_path / rel)) is expected


def test_downloads_make_no_events(tmp_path):
    """Reading images (every download) is not even reported by inotify; a change still is."""
    root = tmp_path / "images"
    img = make_image(root, "main", 1)
    seen = []

    class Counting(TreeWatcher):
        def on_any_event(self, event):
            seen.append(event.event_type)
            super().on_any_event(event)

    w = Counting(root, lambda: None, debounce=0.05)
    w.start()
    try:
        for _ in range(50):
            for f in img.iterdir():
                if f.is_file():
                    f.read_bytes()
        (img / "notes.txt").write_text("a change")
        wait_for(lambda: "created" in seen, 10, "the change to be seen")
        assert not {"opened", "closed_no_write"} & set(seen), seen
    finally:
        w.stop()
