"""packages = ["tar", "deb"] end to end on a real master and worker with the fixture kernel tree: the .deb
is published with the image, installs with dpkg into a scratch root at the exact image name, and the
image's reproducer rebuilds the same files from the commit in an empty directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
import urllib.request

import pytest

from buildbot_kernel.digest import sha256_file
from buildbot_kernel.formats import debian
from buildbot_kernel.imagetree import package

from .harness import FixtureRepo, Master, Worker, free_port, settings_text, wait_for

pytestmark = pytest.mark.integration
# uppercase and '_' in the branch: the image name keeps them, the Debian package name cannot
BRANCH = "topic/Intel_GT"
SAFE_BRANCH = "topic-Intel_GT"
FRAGMENT = "CONFIG_DRM_I915_DEBUG=y\n"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    base = tmp_path_factory.mktemp("deb")
    repo = FixtureRepo(base, (BRANCH,))
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    text = settings_text(str(repo.bare), (BRANCH,), ports).replace(
        'config = "defconfig"\n', 'config = "defconfig"\nfragments = ["debug.config"]\npackages = ["tar", "deb"]\n')
    master = Master(base, text)
    (master.dir / "debug.config").write_text(FRAGMENT)
    worker = Worker(base, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    worker.start()
    try:
        branch_dir = master.dir / "images" / SAFE_BRANCH
        wait_for(lambda: branch_dir.is_dir() and any((p / "metadata.json").exists() for p in branch_dir.iterdir()),
                 120, "the branch head's image")
        yield repo, master, next(p for p in branch_dir.iterdir() if (p / "metadata.json").exists()), base, ports
    finally:
        worker.stop()
        master.stop()


def dpkg_field(deb, field) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_deb_is_published_and_listed(image):
    _, _, d, _, ports = image
    name = d.name
    assert "_" in name and "Intel_GT" in name
    assert package.verify_image_dir(d) == []
    meta = json.loads((d / "metadata.json").read_text())
    assert meta["packages"] == ["tar", "deb"]
    debs = [f for f in meta["files"] if f.endswith(".deb")]
    assert debs == [f"{debian.package_name(name)}_{debian.package_version(name)}_amd64.deb"]
    info = meta["files"][debs[0]]
    assert info["size"] == (d / debs[0]).stat().st_size and info["sha256"] == sha256_file(d / debs[0])
    # the index and the index pages list it, and the image server serves it
    base = f"http://127.0.0.1:{ports['image']}"
    index = wait_for(lambda: _index_entry(base, name), 30, "the image in index.json")
    assert debs[0] in index["files"] and "build.log.xz" in index["files"] and "reproducer.sh" in index["files"]
    page = urllib.request.urlopen(f"{base}/index.html", timeout=10).read().decode()
    hrefs = [urllib.parse.unquote(h) for h in re.findall(r'href="([^"]*)"', page)]
    for f in (debs[0], "build.log.xz", "reproducer.sh"):
        assert f"{SAFE_BRANCH}/{name}/{f}" in hrefs, f
    assert ">build log</a>" in page and ">reproducer</a>" in page
    with urllib.request.urlopen(f"{base}/{SAFE_BRANCH}/{name}/{debs[0].replace('+', '%2B')}", timeout=10) as r:
        assert r.read() == (d / debs[0]).read_bytes()


def _index_entry(base, name):
    with urllib.request.urlopen(f"{base}/index.json", timeout=10) as r:
        entries = [i for i in json.load(r)["images"] if i["name"] == name]
    return entries[0] if entries else None


def test_deb_control_fields_are_debian_safe(image):
    _, _, d, _, _ = image
    deb = next(d.glob("*.deb"))
    pkg, version = dpkg_field(deb, "Package"), dpkg_field(deb, "Version")
    assert pkg == debian.package_name(d.name) and debian.PACKAGE_RE.match(pkg)
    assert pkg == pkg.lower() and "_" not in pkg
    assert "_" not in version and debian.VERSION_RE.match(version)
    assert dpkg_field(deb, "Architecture") == "amd64"
    assert d.name in dpkg_field(deb, "Description")


@pytest.mark.skipif(os.geteuid() != 0, reason="dpkg --root installs as root (file owners root:root)")
def test_deb_installs_with_the_exact_image_name(image, tmp_path):
    _, _, d, _, _ = image
    name, deb = d.name, next(d.glob("*.deb"))
    root = tmp_path / "root"
    admin = root / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    (admin / "status").write_text("")
    r = subprocess.run(["dpkg", f"--root={root}", "--log=/dev/null", "-i", str(deb)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (root / "boot" / f"vmlinuz-{name}").read_bytes() == (d / "vmlinuz").read_bytes()
    assert (root / "boot" / f"config-{name}").read_bytes() == (d / "config").read_bytes()
    assert (root / "boot" / f"System.map-{name}").read_bytes() == (d / "System.map").read_bytes()
    assert (root / "lib/modules" / name / "kernel/drivers/gpu/i915.ko").is_file()
    status = subprocess.run(["dpkg", f"--root={root}", "-s", debian.package_name(name)], capture_output=True,
                            text=True, check=True).stdout
    assert "Status: install ok installed" in status
    listed = subprocess.run(["dpkg", f"--root={root}", "-L", debian.package_name(name)], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    assert f"/boot/vmlinuz-{name}" in listed and f"/lib/modules/{name}" in listed


def test_reproducer_rebuilds_the_image_from_the_commit(image, tmp_path):
    repo, _, d, _, _ = image
    meta = json.loads((d / "metadata.json").read_text())
    rep = meta["reproducer"]
    assert rep["git"] == {"url": str(repo.bare), "sha": meta["sha"]} and rep["kernelrelease"] == d.name
    assert rep["unset"] == ["LOCALVERSION"] and rep["make_variables"]["KBUILD_BUILD_TIMESTAMP"] == meta["commit_date"]
    script = (d / "reproducer.sh").read_text()
    assert FRAGMENT in script  # embedded: the master's path means nothing on another machine
    work = tmp_path / "clean"
    work.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LOCALVERSION": "-must-be-unset"}
    r = subprocess.run(["sh", str(d / "reproducer.sh")], cwd=work, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"kernelrelease {d.name} matches the image" in r.stdout
    for f in ("vmlinuz", "config"):
        assert (work / "pkg" / f).read_bytes() == (d / f).read_bytes(), f
    # the fixture's System.map (nm of several objects) names each object's path; its symbols must match
    def symbols(p):
        return [line for line in p.read_text().splitlines() if line and not line.startswith("/")]
    assert symbols(work / "pkg" / "System.map") == symbols(d / "System.map") != []
    assert "CONFIG_DRM_I915_DEBUG=y" in (work / "pkg" / "config").read_text()
