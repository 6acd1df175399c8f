"""Hostile input, end to end: each hole of the review as its own regression test, driven the way a user
(or an attacker on the lab network) would reach it: the real console script, a real HTTP server on
loopback, real processes and signals."""

from __future__ import annotations

import copy
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from buildbot.process.results import FAILURE
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import TestBuildStepMixin
from twisted.trial import unittest as trial

from buildbot_kernel.imagetree.testing import image_fields, make_image, write_payload
from buildbot_kernel.resources import shipped
from buildbot_kernel.settings import Build
from buildbot_kernel.steps.publish import WORKER_SUMS, PublishImage
from buildbot_kernel.target import BuildTarget
from tests.bisect.history import linear, make_history
from tests.bisect.imagetree import BUILD, serve_dir, write_image_tree
from tests.integration.harness import BIN, REPO_ROOT

N = 8


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("hist") / "repo", linear(N))


def cli(*args, cwd=None, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "buildbot_kernel.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def spawn(*args, cwd=None, env=None) -> subprocess.Popen:
    """The CLI as a terminal's foreground command: SIGINT at its default, so Ctrl-C is a KeyboardInterrupt
    even when this test run itself ignores SIGINT (a background job of a shell without job control
    does: CI started that way would otherwise run a CLI that can never see the test's Ctrl-C)."""
    return subprocess.Popen([sys.executable, "-m", "buildbot_kernel.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(predicate, what: str, deadline: float = 60):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """Running or stopped; a zombie (dead, waiting for its new parent to reap it) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def files_under(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


# --- A. bisect CLI: hostile index entries -------------------------------------------------------------

def test_hostile_index_entries_are_left_out_and_nothing_is_written_outside_the_image_dir(h, tmp_path):
    """The hole: an entry named ``../../x`` or an absolute path made the bisect write files outside its
    image directory.  Every such entry is now left out with a warning naming it and the reason."""
    served = tmp_path / "served"
    served.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    with serve_dir(served) as base:
        index_path = write_image_tree(served, h, [0, N - 1], base)
        doc = json.loads(index_path.read_text())
        real = doc["images"][0]  # a real image: its files are served and match their checksums
        abs_target = tmp_path / "absolute"

        def hostile(i, **changes):
            entry = copy.deepcopy(real)
            entry.update({"sha": h.shas[i], **changes})
            entry.pop("path", None)
            return entry

        port = base.rsplit(":", 1)[1]
        doc["images"] += [
            hostile(1, name="../../x"),
            hostile(2, name=str(abs_target)),
            hostile(3, name="ok-name", files={"../escape": real["files"]["vmlinuz"]}),
            hostile(4, name="elsewhere", url=f"http://localhost:{port}/main/{real['name']}/"),  # another host
            hostile(5, name="upward", url=f"{base}/main/%2e%2e/%2e%2e/"),
            hostile(6, name=".hidden"),
            hostile(6, name="nul\x00byte"),
            hostile(6, name="shell", sha="$(id)"),
            hostile(6, name="branchy", branch="../.."),
        ]
        index_path.write_text(json.dumps(doc))
        images = work / "images"
        r = cli("bisect", "--repo", h.path, "--good", h.shas[0], "--bad", h.shas[N - 1],
                "--index", f"{base}/index.json", "--build", BUILD, "--run", "exit 1",
                "--image-dir", images, cwd=work)
    assert "Traceback" not in r.stderr
    assert r.returncode == 0, r.stderr
    # nothing to test between good and bad: the range is all six commits, every hostile entry ignored
    assert r.stdout.splitlines()[-1] == "first bad commit is one of: " + " ".join(h.shas[1:N])
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: entry left out:")]
    assert len(warnings) == 9, r.stderr
    for words in ("'../../x'): name '../../x' holds a path separator",
                  f"({str(abs_target)!r}): name {str(abs_target)!r} holds a path separator",
                  "('ok-name'): file name '../escape' holds a path separator",
                  "('elsewhere'): url 'http://localhost:", "is not under the index's base",
                  "('upward'): url", "url path segment '..' starts with '.'",
                  "('.hidden'): name '.hidden' starts with '.'", "NUL or control character",
                  "('shell'): sha '$(id)' is not a full commit id",
                  "('branchy'): branch '../..' holds '..'"):
        assert words in r.stderr, words
    assert not abs_target.exists()
    outside = {p for p in files_under(tmp_path) if not p.startswith(("served", "work/images"))} - {"work"}
    assert outside == set(), outside
    assert not (tmp_path / "x").exists() and not (work / "x").exists()


# --- A. bisect CLI: timeout and Ctrl-C ----------------------------------------------------------------

def _pid_recording_test(tmp_path: Path) -> tuple[str, Path]:
    """A test that starts two background sleepers in its own process group and records every pid."""
    pids = tmp_path / "pids"
    script = tmp_path / "hang.sh"
    script.write_text(f"echo $$ >> {pids}\n"
                      f"sleep 1000 & echo $! >> {pids}\n"
                      f"sh -c 'sleep 1000' & echo $! >> {pids}\n"
                      f"echo started >> {pids}.done\n"
                      "wait\n")
    return f"sh {script}", pids


def _recorded_pids(pids: Path) -> list[int]:
    return [int(x) for x in pids.read_text().split()]


def test_timeout_kills_the_whole_process_group_and_the_commit_is_skip(h, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    run, pids = _pid_recording_test(tmp_path)
    with serve_dir(served) as base:
        write_image_tree(served, h, [0, 3, N - 1], base)
        began = time.monotonic()
        r = cli("bisect", "--repo", h.path, "--good", h.shas[0], "--bad", h.shas[N - 1],
                "--index", f"{base}/index.json", "--build", BUILD, "--run", run, "--timeout", "1")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert time.monotonic() - began < 60
    assert "skip (test command still running after 1 s: killed with its process group, --timeout 1)" in r.stdout
    assert r.stdout.splitlines()[-1].startswith("first bad commit is one of: ")  # the skip leaves a range
    recorded = _recorded_pids(pids)
    assert len(recorded) == 3
    wait_for(lambda: not any(alive(p) for p in recorded), "the test's process group to be gone", 10)


def test_ctrl_c_kills_the_test_and_removes_every_temporary_directory(h, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run, pids = _pid_recording_test(tmp_path)
    env = dict(os.environ, TMPDIR=str(tmp))
    with serve_dir(served) as base:
        write_image_tree(served, h, [0, 3, N - 1], base)
        proc = spawn("bisect", "--repo", h.path, "--good", h.shas[0], "--bad", h.shas[N - 1],
                     "--index", f"{base}/index.json", "--build", BUILD, "--run", run, env=env)
        try:
            wait_for(lambda: Path(f"{pids}.done").exists(), "the test command to start")
            assert any(p.name.startswith("bisect-images-") for p in tmp.iterdir())  # the download is there
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert list(tmp.iterdir()) == []  # image download and log directories both gone
    recorded = _recorded_pids(pids)
    assert len(recorded) == 3
    wait_for(lambda: not any(alive(p) for p in recorded), "the test's process group to be gone", 10)


# --- B. bad settings: `buildbot checkconfig` names the key and the fix, no traceback -------------------

def _checkconfig(master_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("BUILDBOT_KERNEL_SETTINGS", None)
    return subprocess.run([str(BIN / "buildbot"), "checkconfig", str(master_dir)], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def master_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("m") / "master"
    subprocess.run([str(BIN / "buildbot"), "create-master", "-q", str(d)], check=True)
    shutil.copy(shipped("master.cfg"), d / "master.cfg")
    return d


def _shipped() -> str:
    return shipped("settings.toml").read_text()


@pytest.mark.parametrize("case, make, words", [
    ("not utf-8", lambda t, d: t.encode("utf-8").replace(b'title = "', b'title = "\xff'),
     ["not UTF-8 text: byte 0xff", "save the file as UTF-8"]),
    ("nested", lambda t, d: t + "x = " + "[" * 4000 + "]" * 4000 + "\n", ["nested too deeply"]),
    ("several at once", lambda t, d: t.replace('"drm-tip"', '"drm-tip", "..", "drm/tip"')
     .replace("[server]\n", '[server]\nbind = "lab-host"\ndb_url = "nonsense"\n')
     .replace('base_url = "http://localhost:8011"', 'base_url = "file:///etc/"'),
     ["[[repository]] ('drm-intel').branches: branch '..' holds '..'",
      "'drm-tip' and 'drm/tip' both become the image directory 'drm-tip'",
      "[server].bind: 'lab-host' is not an IP address", "[server].db_url: 'nonsense' is not an SQLAlchemy",
      "[images].base_url: 'file:///etc/' is not an http:// or https:// URL"]),
    ("images.root is a file", lambda t, d: (d / "afile").write_text("x") and
     t.replace('root = "images"', 'root = "afile"'), ["[images].root:", "is not a directory"]),
])
def test_checkconfig_prints_bad_settings_without_a_traceback(master_dir, case, make, words):
    text = make(_shipped(), master_dir)
    settings_file = master_dir / "settings.toml"
    if isinstance(text, bytes):
        settings_file.write_bytes(text)
    else:
        settings_file.write_text(text)
    r = _checkconfig(master_dir)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Traceback" not in out, out
    for w in words:
        assert f"{settings_file}: " in out and w in out, (w, out)


# --- C. one image with metadata that cannot be encoded: left out, the rest indexed, verify flags it -----

def test_an_unencodable_image_is_skipped_by_index_and_flagged_by_verify(tmp_path):
    root = tmp_path / "images"
    good = make_image(root, "drm-tip", 1)
    bad = make_image(root, "drm-tip", 2)
    meta = json.loads((bad / "metadata.json").read_text())
    (bad / "metadata.json").write_text(json.dumps(meta).replace(json.dumps(meta["subject"]), '"x \\udc80 y"'))
    r = cli("index", "--root", root, "--base-url", "http://127.0.0.1:8011")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"not listed: drm-tip/{bad.name}: metadata field 'subject' cannot be encoded as UTF-8" in r.stdout
    assert "1 images listed" in r.stdout
    assert [e["name"] for e in json.loads((root / "index.json").read_text())["images"]] == [good.name]
    r = cli("images", "verify", good, bad)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{good}: ok" in r.stdout
    assert f"{bad}: metadata field 'subject' cannot be encoded as UTF-8" in r.stdout


# --- D. a full image disk: the publish says so and leaves the tree as it was ---------------------------

def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


class TestFullImageDisk(TestBuildStepMixin, TestReactorMixin, trial.TestCase):
    """A real 2 MiB filesystem (tmpfs) as the image disk; needs root and mount(2) in this container."""

    def setUp(self):
        self.disk = Path(tempfile.mkdtemp(prefix="bbk-fulldisk-"))
        self.addCleanup(shutil.rmtree, self.disk, True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(self.disk)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise trial.SkipTest(f"cannot mount a small tmpfs here (needs root and mount rights): {r.stderr}")
        self.addCleanup(subprocess.run, ["umount", str(self.disk)], check=True)
        self.setup_test_reactor()
        return self.setup_test_build_step()

    def test_a_publish_that_hits_a_full_disk_says_so_and_leaves_the_tree_as_it_was(self):
        root = self.disk / "images"
        root.mkdir()
        make_image(root, "drm-tip", 1)  # the tree already holds an image
        fields = image_fields("drm-tip", 2)
        incoming = root / ".incoming" / f"{fields['name']}.0badf00d"  # as the upload step leaves it
        incoming.mkdir(parents=True)
        write_payload(incoming, seed="2")
        sums = subprocess.run(["sha256sum", "--", *sorted(p.name for p in incoming.iterdir())], cwd=incoming,
                              capture_output=True, text=True, check=True).stdout
        (incoming / WORKER_SUMS).write_text(sums)
        before = {k: v for k, v in _snapshot(root).items() if not k.startswith(".incoming/")}
        with open(self.disk / "filler", "wb") as f:  # the rest of the disk (outside the tree) fills up
            with self.assertRaisesRegex(OSError, "No space left"):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        target = BuildTarget(repository="fixture", url=fields["url"], branch="drm-tip",
                             build=Build(name="x86_64", arch="x86_64", config="defconfig"),
                             images_root=str(root), state_dir=str(self.disk / "state"))
        self.setup_step(PublishImage(target))
        for key, value in (("image_name", fields["name"]), ("commit_sha", fields["sha"]),
                           ("commit_subject", fields["subject"]), ("commit_author", fields["author"]),
                           ("commit_date", fields["commit_date"]), ("incoming_dir", str(incoming))):
            self.build.setProperty(key, value, "test")
        msg = f"no space left on the image disk: {root}"
        self.expect_outcome(result=FAILURE, state_string=f"{msg} (failure)")
        d = self.run_step()

        def check(_):
            self.assertEqual(_snapshot(root), before)  # no half image, no temp file
            self.assertEqual(os.listdir(root / ".incoming"), [])  # and no stale staging entry
            self.assertFalse((root / "drm-tip" / fields["name"]).exists())
        return d.addCallback(check)


class _HostileFiles(http.server.BaseHTTPRequestHandler):
    """An image server that redirects one file elsewhere and streams far more of another than its size."""

    def do_GET(self):  # noqa: N802 - the base class's name
        if self.path.endswith("/redirected/vmlinuz"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/anything-else")
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        for _ in range(64):  # 4 MiB where the index says 10 bytes
            self.wfile.write(b"\0" * 65536)

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_downloads_refuse_redirects_and_stop_at_the_size_the_index_says(tmp_path):
    from buildbot_kernel.bisect.images import ImageError, ImageIndex, fetch_image

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileFiles)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        files = {"vmlinuz": {"size": 10, "sha256": "0" * 64}}
        doc = {"schema": 1, "images": [
            {"name": n, "sha": c * 40, "build": BUILD, "branch": "main", "url": f"{base}main/{n}/", "files": files}
            for n, c in (("redirected", "a"), ("endless", "b"))]}
        index = ImageIndex.from_document(doc, base_url=base + "index.json")
        assert index.skipped == []
        with pytest.raises(ImageError, match=r"redirected \(302\) to http://127.0.0.1:1/anything-else; image "
                                             "files are only fetched from under the index's base URL"):
            fetch_image(index.lookup("a" * 40, BUILD), tmp_path / "redirected")
        with pytest.raises(ImageError, match="more than the 10 bytes the index says; download stopped"):
            fetch_image(index.lookup("b" * 40, BUILD), tmp_path / "endless")
        assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no partial download kept
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
