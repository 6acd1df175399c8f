"""The Buildbot services as master.cfg runs them: real reactor, real HTTP, real watchdog."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from lane_ports import free_port
from twisted.internet import defer, threads
from twisted.python import threadable
from twisted.trial import unittest
from twisted.web import resource

from buildbot_kernel.imagetree import package
from buildbot_kernel.imagetree.services import ImageServerService, ImageTreeService
from buildbot_kernel.imagetree.testing import image_fields, make_image, write_payload
from buildbot_kernel.resources import shipped

# watchdog warns when a watched directory is renamed inside the tree (each publish); see watcher.py
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")



class Machines(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"boot instructions"


REPO_SETTINGS = shipped("settings.toml")


def fetch(url):
    return threads.deferToThread(lambda: urllib.request.urlopen(url, timeout=30).read())


class ImageServicesTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="imagetree-services-")
        self.addCleanup(shutil.rmtree, self.root, True)

    @defer.inlineCallbacks
    def start(self, **tree_kw):
        tree = ImageTreeService(root=self.root, base_url="http://images.example.org/", debounce=0.1,
                                **tree_kw)
        srv = ImageServerService(root=self.root, port=0, children={"machines": Machines()})
        yield tree.startService()
        self.addCleanup(tree.stopService)
        yield srv.startService()
        self.addCleanup(srv.stopService)
        return tree, srv, f"http://127.0.0.1:{srv.port.getHost().port}/"

    @defer.inlineCallbacks
    def test_serves_tree_index_and_mounted_children(self):
        make_image(self.root, "b", 1)
        tree, srv, url = yield self.start()
        doc = json.loads((yield fetch(url + "index.json")))  # regenerated at start
        self.assertEqual(len(doc["images"]), 1)
        self.assertTrue(doc["images"][0]["url"].startswith("http://images.example.org/b/"))
        self.assertEqual((yield fetch(url + "machines/skl-1/boot")), b"boot instructions")
        self.assertEqual(tree.base_url, "http://images.example.org/")

    @defer.inlineCallbacks
    def test_publish_applies_retention_and_respects_pins(self):
        tree, srv, url = yield self.start(keep_per_branch=1)
        pinned = image_fields("b", 0)["name"]
        tree.pin_sources.append(lambda: {pinned})
        for i in range(3):
            fields = image_fields("b", i)
            stage = package.staging_dir(self.root)
            write_payload(stage)
            package.write_manifest(stage, fields)
            path = yield tree.publish(stage, "b", fields["name"])
            self.assertTrue(os.path.isdir(path))
        names = [e["name"] for e in json.loads((yield fetch(url + "index.json")))["images"]]
        self.assertEqual(names, [image_fields("b", 2)["name"], pinned])
        with self.assertRaises(package.ImageExists):
            stage = package.staging_dir(self.root)
            write_payload(stage)
            package.write_manifest(stage, image_fields("b", 2))
            yield tree.publish(stage, "b", image_fields("b", 2)["name"])

    @defer.inlineCallbacks
    def test_published_after_a_callers_own_rename(self):
        tree, srv, url = yield self.start()
        fields = image_fields("b", 7)
        stage = package.staging_dir(self.root)
        write_payload(stage)
        package.write_manifest(stage, fields)
        path = package.publish(stage, self.root, "b", fields["name"])
        yield tree.published(path)
        latest = yield fetch(url + "b/latest")
        self.assertEqual(latest.decode().strip(), fields["name"])

    @defer.inlineCallbacks
    def test_reconfig_moves_the_port(self):
        tree, srv, url = yield self.start()
        new = free_port()
        yield srv.reconfigService(root=self.root, port=new, interface="127.0.0.1")
        self.assertEqual(srv.port.getHost().port, new)
        body = yield fetch(f"http://127.0.0.1:{new}/index.json")
        self.assertIn(b'"images"', body)
        with self.assertRaises(OSError):
            yield fetch(url + "index.json")  # the old port is closed

    @defer.inlineCallbacks
    def test_start_removes_leftover_staging_and_temp_files_but_a_reconfig_does_not(self):
        img = make_image(self.root, "b", 1)
        root = Path(self.root)
        stale = [root / ".incoming" / "6.1.0-b_aaaaaa_20240101_+.1234abcd", root / ".tmp-index.json.x1",
                 root / "b" / ".tmp-latest.x2", img / ".tmp-metadata.json.x3", root / ".state" / ".tmp-cache.x4"]
        stale[0].mkdir(parents=True)
        (stale[0] / "vmlinuz").write_bytes(b"half an upload")
        (root / ".state").mkdir(exist_ok=True)
        for f in stale[1:]:
            f.write_text("half written")
        tree, srv, url = yield self.start(watch="off")
        self.assertEqual([p for p in stale if p.exists()], [])
        self.assertEqual(sorted(os.listdir(img)), sorted(package.REQUIRED_FILES + package.MANIFEST_FILES))
        self.assertIn(img.name.encode(), (yield fetch(url + "index.json")))
        staging = tree.tree.staging_dir()  # a build staging while the master is reconfigured
        yield tree.reconfigService(root=self.root, base_url="http://images.example.org/", watch="off")
        self.assertTrue(staging.is_dir())

    @defer.inlineCallbacks
    def test_the_tree_service_does_its_disk_work_off_the_reactor_thread(self):
        """Start (cache, leftovers, regeneration, inotify watches), a publish and a regeneration open files
        under the tree only from threads: an audit hook records each open and whether the reactor's thread
        made it (no timing: a slow machine cannot make this pass or fail)."""
        make_image(self.root, "b", 1)
        fields = image_fields("b", 2)

        def stage_image():  # what a build's upload does (on a worker, never on the master's reactor)
            stage = package.staging_dir(self.root)
            write_payload(stage)
            package.write_manifest(stage, fields)
            return stage

        root = os.path.realpath(self.root)
        opened = []  # (event, path, on the reactor thread)
        recording = [True]

        def hook(event, args):
            try:
                if recording[0] and event in ("open", "os.listdir", "os.scandir") and args \
                        and isinstance(args[0], str | bytes | os.PathLike):
                    path = os.path.realpath(os.fsdecode(args[0]))
                    if path.startswith(root):
                        opened.append((event, path, threadable.isInIOThread()))
            except Exception as e:  # noqa: BLE001 - an exception here would fail the open being audited
                opened.append(("hook failed", repr(e), True))

        sys.addaudithook(hook)  # hooks cannot be removed: this one stops recording at cleanup
        self.addCleanup(recording.__setitem__, 0, False)
        tree, srv, url = yield self.start()
        stage = yield threads.deferToThread(stage_image)
        yield tree.publish(stage, "b", fields["name"])
        yield tree.regenerate()
        recording[0] = False
        self.assertTrue(any(p.endswith("/metadata.json") for _e, p, _io in opened), opened)
        self.assertTrue(any("/.tmp-index.json." in p for _e, p, _io in opened), opened)  # its atomic writes
        self.assertEqual([(e, p) for e, p, on_reactor in opened if on_reactor], [])

    def test_bad_config(self):
        with self.assertRaises(ValueError):
            ImageTreeService(root=self.root, base_url="http://x/", watch="sometimes")
        with self.assertRaises(ValueError):
            ImageServerService(root=self.root, port=70000)

    @defer.inlineCallbacks
    def test_mounts_survive_a_new_site(self):
        tree, srv, url = yield self.start()
        srv.mount("farm", Machines())
        self.assertEqual((yield fetch(url + "farm/x")), b"boot instructions")
        new = free_port()
        yield srv.reconfigService(root=self.root, port=new)
        self.assertEqual((yield fetch(f"http://127.0.0.1:{new}/farm/x")), b"boot instructions")


def test_services_from_settings(tmp_path):
    from buildbot_kernel import settings as settings_mod
    from buildbot_kernel.imagetree.services import services_from_settings

    text = (REPO_SETTINGS.read_text())
    s = settings_mod.parse(text, str(tmp_path / "settings.toml"))
    svcs = services_from_settings(s, str(tmp_path / "images"))
    assert [type(x).__name__ for x in svcs] == ["ImageTreeService", "ImageServerService"]
    off = settings_mod.parse(text.replace("image_port = 8011", "image_port = 0"), str(tmp_path / "s.toml"))
    assert [type(x).__name__ for x in services_from_settings(off, str(tmp_path / "images"))] == [
        "ImageTreeService"]


def test_a_large_tree_without_a_cache_is_indexed_by_a_child_process(tmp_path):
    from buildbot_kernel.imagetree.index import CACHE
    from buildbot_kernel.imagetree.services import index_in_child, large_tree_without_cache

    root = tmp_path / "images"
    imgs = [make_image(root, "b", i) for i in range(2)] + [make_image(root, "c", 0)]
    assert large_tree_without_cache(str(root), at_least=3) and not large_tree_without_cache(str(root), at_least=4)
    assert index_in_child(str(root), "http://images.example.org/", "") == ""
    doc = json.loads((root / "index.json").read_text())
    assert sorted(e["name"] for e in doc["images"]) == sorted(i.name for i in imgs)
    assert (root / CACHE).is_file() and not large_tree_without_cache(str(root), at_least=1)
    assert "--base-url" in index_in_child(str(root), "ftp://x/", "")  # the reason, for the master's log

