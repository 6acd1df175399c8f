"""Helpers shared by the farm's tests and benchmark: stage-1 artifacts, image directories, and a farm
server with a real reactor in a background thread (pytest drives it with blocking calls).

Nothing here is a stand-in for a farm part: the server is the real Resource over real HTTP, the
machine a real QEMU VM, the images real kernels (or deliberately broken files, for fault tests).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from buildbot_kernel.digest import sha256_file
from buildbot_kernel.farm.http import MachinesResource
from buildbot_kernel.farm.instructions import BootFile
from buildbot_kernel.farm.registry import Registry
from buildbot_kernel.farm.stage1 import Stage1, stage1_artifacts  # noqa: F401 (re-exported)
from buildbot_kernel.imagetree.httpguard import install_body_limit
from buildbot_kernel.utctime import iso_utc


def modules_tarball(release: str, marker: str = "bbk-marker") -> bytes:
    """A tiny modules.tar.xz (lib/modules/<release>/<marker>) proving modules reach the candidate."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as t:
        data = f"installed by the farm for {release}\n".encode()
        info = tarfile.TarInfo(f"lib/modules/{release}/{marker}")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_image(root: Path, base_url: str, name: str, vmlinuz: bytes | str, *, branch: str = "farm-test",
                sha: str = "0" * 40, announce_sha256: str | None = None,
                modules: bytes | None = None) -> dict:
    """An image directory as the image tree publishes it, and its index.json entry.

    ``announce_sha256`` overrides the vmlinuz checksum written to metadata.json, to model a file that
    got truncated or corrupted after publishing.
    """
    d = Path(root) / branch / name
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(vmlinuz, str):
        vmlinuz = Path(vmlinuz).read_bytes()
    (d / "vmlinuz").write_bytes(vmlinuz)
    (d / "config").write_text("# fixture config\n")
    (d / "System.map").write_text("0000000000000000 T _text\n")
    (d / "modules.tar.xz").write_bytes(modules if modules is not None else modules_tarball(name))
    files = {f.name: {"size": f.stat().st_size, "sha256": sha256_file(f)} for f in sorted(d.iterdir())
             if f.name not in ("metadata.json", "SHA256SUMS")}
    if announce_sha256:
        files["vmlinuz"]["sha256"] = announce_sha256
    now = iso_utc()
    meta = {"schema": 1, "name": name, "kernelrelease": name, "repository": "fixture", "url": "fixture",
            "branch": branch, "sha": sha, "subject": "fixture image", "author": "farm tests",
            "commit_date": now, "build_date": now, "build": "x86_64", "arch": "x86_64", "files": files}
    # both manifests, agreeing (with the announced checksum too): the tree's completeness rule
    (d / "SHA256SUMS").write_text("".join(f"{files[n]['sha256']}  {n}\n" for n in sorted(files)))
    (d / "metadata.json").write_text(json.dumps(meta, indent=1))
    return dict(meta, url=f"{base_url.rstrip('/')}/{branch}/{name}/")


class ReactorThread:
    """The global reactor running in a daemon thread; ``call`` runs a function there and waits."""

    _started = False

    @classmethod
    def ensure(cls):
        from twisted.internet import reactor

        if not cls._started:
            ready = threading.Event()
            reactor.callWhenRunning(ready.set)
            threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True,
                             name="farm-reactor").start()
            if not ready.wait(10):
                raise RuntimeError("the Twisted reactor did not start")
            cls._started = True
        return reactor

    @classmethod
    def call(cls, fn, *args, **kwargs):
        from twisted.internet import threads

        return threads.blockingCallFromThread(cls.ensure(), fn, *args, **kwargs)


class FarmServer:
    """The image tree at ``/`` (as the embedded image server serves it) with ``/machines`` mounted on it,
    on 127.0.0.1, port chosen by the kernel."""

    def __init__(self, images_root: Path, registry: Registry, poll: dict | None = None,
                 initrds: dict | None = None):
        self.images_root = Path(images_root)
        self.registry = registry
        self.poll = poll or {}
        self.initrds = initrds or {}
        self.port = None

    def _listen(self):
        from twisted.internet import reactor
        from twisted.web import server, static

        root = static.File(os.fspath(self.images_root))
        root.putChild(b"machines", MachinesResource(self.registry, self.poll, self.initrds))
        site = server.Site(root)
        install_body_limit(site)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        return self.port.getHost().port

    def start(self) -> int:
        self.port_number = ReactorThread.call(self._listen)
        return self.port_number

    def stop(self):
        if self.port is not None:
            ReactorThread.call(self.port.stopListening)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port_number}"

    @property
    def images_url(self) -> str:
        return self.url

    def guest_url(self) -> str:
        return f"http://10.0.2.2:{self.port_number}"

    def initrd_file(self, machine: str) -> BootFile | None:
        p = self.initrds.get(machine)
        if not p:
            return None
        return BootFile(f"{self.guest_url()}/machines/{machine}/initrd", sha256_file(p))


def _headers(key: str | None) -> dict:
    return {"X-BBK-Key": key} if key else {}


def http_get(url: str, key: str | None = None) -> tuple[int, str]:
    """(status, body) of a GET (with the machine key ``key`` as stage 1 sends it), HTTP errors included:
    tests assert on refusals too."""
    return _http(urllib.request.Request(url, headers=_headers(key)))


def http_post(url: str, fields: dict, key: str | None = None) -> tuple[int, str]:
    """(status, body) of an urlencoded POST, as stage 1 and stage 2 send reports."""
    return _http(urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), headers=_headers(key)))


def _http(req) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def settings_toml(image_port: int, images_root: str, base_url: str, machines: str) -> str:
    """A complete settings file (one repository, build and worker, as validation requires) around the
    given ``[[machine]]`` tables."""
    return f"""
[server]
image_port = {image_port}
[images]
root = "{images_root}"
base_url = "{base_url}"
[[repository]]
name = "r"
url = "/dev/null"
branches = ["main"]
build = "b"
[[build]]
name = "b"
[[worker]]
name = "w"
password = "p"
{machines}
"""
