"""The tree a real master published, served the way it is deployed: Debian's nginx and apache2 started as
root with the generated snippets (their workers drop to www-data), and read as NFS's root_squash user.

The tree lives under a 0755 directory made with ``served_dir`` (not pytest's tmp_path, which is 0700 and
would stop www-data and nobody before they reach the tree whatever its own modes).  The master is the
project's master.cfg under twistd, whose umask is 077, with a buildbot-worker whose uploads keep 0600
modes: the conditions the permission contract (docs/serving.md) must survive.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from buildbot_kernel.imagetree.modes import Modes, visible_paths
from buildbot_kernel.imagetree.snippets import render, snippet_vars, standalone_nginx_conf
from buildbot_kernel.imagetree.testing import ServerProcess, served_dir
from tests.integration.harness import FixtureRepo, Master, Worker, free_port, settings_text, wait_for

pytestmark = pytest.mark.integration
BRANCH = "drm-intel-fixes"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} must start as root to drop to its unprivileged user, as it is deployed")


def publish_with_a_master(tmp_path_factory, group: str = ""):
    """(tree root, image directory): one image built and published by a real master, master stopped."""
    base = tmp_path_factory.mktemp("deploy")
    served = served_dir("bbk-deploy-")
    root = served / "images"
    repo = FixtureRepo(base, (BRANCH,))
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    settings = settings_text(str(repo.bare), (BRANCH,), ports).replace(
        'root = "images"', f'root = "{root}"\ngroup = "{group}"')
    master = Master(base, settings)
    worker = Worker(base, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    worker.start()
    try:
        wait_for(lambda: (root / BRANCH / "latest").is_file() and master.idle(), 180, "an image to be published")
    finally:
        worker.stop()
        master.stop()
    name = (root / BRANCH / "latest").read_text().strip()
    yield root, root / BRANCH / name
    shutil.rmtree(served, ignore_errors=True)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The default contract: world-readable."""
    yield from publish_with_a_master(tmp_path_factory)


@pytest.fixture(scope="module")
def published_for_www_data(tmp_path_factory):
    """``[images] group = "www-data"``: readable by the web server's group only."""
    if os.geteuid() != 0:
        pytest.skip("only root can hand the tree to group www-data")
    yield from publish_with_a_master(tmp_path_factory, "www-data")


def test_every_published_path_is_readable_as_nobody(published):
    """What NFS's root_squash/all_squash maps clients to: any unreadable path fails the test."""
    root, image = published
    paths = [root, *visible_paths(root)]
    assert {"index.json", "index.html", BRANCH, f"{BRANCH}/latest", f"{BRANCH}/index.json",
            f"{BRANCH}/{image.name}/vmlinuz"} <= {str(p.relative_to(root)) for p in paths}
    assert Modes().unreadable(root) == []
    need_root("setpriv")
    files = [str(p) for p in paths if p.is_file()]
    dirs = [str(p) for p in paths if p.is_dir()]
    r = subprocess.run([*SETPRIV, "cat", *files], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    assert len(r.stdout) == sum(os.path.getsize(f) for f in files)
    r = subprocess.run([*SETPRIV, "ls", "-a", *dirs], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def nfs_server_available() -> str | None:
    """Why ``exportfs`` cannot be checked here (None when it can): it needs the kernel's NFS server."""
    if not shutil.which("exportfs"):
        return "exportfs is not installed (scripts/install-deps installs nfs-kernel-server)"
    if os.geteuid() != 0:
        return "exportfs needs root"
    with open("/proc/filesystems") as f:
        if "nfsd" not in f.read():
            return "this kernel offers no NFS server (no nfsd in /proc/filesystems; a container or no module)"
    return None


def test_nfs_export_line_is_accepted_by_exportfs(published):
    root, _ = published
    line = render("nfs", **snippet_vars(str(root), "http://127.0.0.1/", nfs_clients="127.0.0.1")).splitlines()[-1]
    path, _, client = line.partition(" ")
    host, _, options = client.partition("(")
    assert path == str(root) and host == "127.0.0.1" and "all_squash" in options
    why = nfs_server_available()
    if why:
        pytest.skip(why)
    # -i: ignore /etc/exports, export just this line's path to this line's client with its options
    subprocess.run(["exportfs", "-i", "-o", options.rstrip(")"), f"{host}:{path}"], check=True)
    try:
        listed = subprocess.run(["exportfs", "-v"], capture_output=True, text=True, check=True).stdout
        assert path in listed and "all_squash" in listed
    finally:
        subprocess.run(["exportfs", "-u", f"{host}:{path}"], check=False)


def fetch(url: str) -> tuple[bytes, dict]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read(), dict(r.headers)


def wait_http(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            fetch(url)
            return
        except urllib.error.HTTPError as e:  # it is up, and answered: 403 is what an unreadable tree gives
            raise AssertionError(f"{what} answered {e.code} for {url}") from None
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None, f"{what} exited: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"{what} did not answer at {url}"
            time.sleep(0.05)


def worker_users(pid: int) -> set[str]:
    out = subprocess.run(["ps", "-o", "user=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return set(out.split())


def download_image(base: str, root: Path, image: Path, server: str) -> tuple[int, int]:
    """Every file of the image over HTTP, checked against metadata.json; the index files too.
    Returns (files, bytes) of the image."""
    rel = f"{image.parent.name}/{image.name}"
    meta = json.loads(fetch(f"{base}{rel}/metadata.json")[0])
    assert meta == json.loads((image / "metadata.json").read_text())
    files = nbytes = 0
    for name, info in sorted(meta["files"].items()):
        body, headers = fetch(f"{base}{rel}/{name}")
        assert len(body) == info["size"] and hashlib.sha256(body).hexdigest() == info["sha256"], name
        files += 1
        nbytes += len(body)
    sums = fetch(f"{base}{rel}/SHA256SUMS")[0].decode()
    assert all(f"{info['sha256']}  {n}" in sums for n, info in meta["files"].items())
    index = json.loads(fetch(base + "index.json")[0])
    assert [e["name"] for e in index["images"]] == [image.name]
    branch_index = json.loads(fetch(f"{base}{image.parent.name}/index.json")[0])
    assert [e["path"] for e in branch_index["images"]] == [f"{rel}/"]
    assert image.name in fetch(f"{base}{image.parent.name}/index.html")[0].decode()
    latest, headers = fetch(f"{base}{image.parent.name}/latest")
    assert latest.decode().strip() == image.name
    print(f"\n{server} as www-data: {files} files, {nbytes} bytes, sha256 all matching "
          f"(+ metadata.json, SHA256SUMS, index.json, {image.parent.name}/index.json, index.html, latest)")
    return files, nbytes


@pytest.fixture
def embedded(tmp_path):
    """The master's embedded server on the tree (what the snippets proxy sha/ and machines/ to):
    start(root) -> (its URL without the "/", its access log)."""
    started = []

    def start(root: Path) -> tuple[str, Path]:
        log = tmp_path / "embedded-access.log"
        started.append(ServerProcess(root, log))
        return started[-1].url.rstrip("/"), log

    yield start
    for s in started:
        s.stop()


def check_proxied(base: str, image: Path, access_log: Path, server: str) -> None:
    """sha/ and machines/ under the front server's base URL reach the embedded server."""
    sha = json.loads((image / "metadata.json").read_text())["sha"]
    answer = json.loads(fetch(f"{base}sha/{sha[:12]}")[0])
    assert answer["sha"] == sha and [e["name"] for e in answer["images"]] == [image.name], server
    with pytest.raises(urllib.error.HTTPError) as e:  # no farm here: the embedded server's 404
        fetch(f"{base}machines/no-such-machine/boot")
    assert e.value.code == 404
    wait_for(lambda: "/machines/no-such-machine/boot" in access_log.read_text(), 10,
             f"{server} to pass machines/ to the embedded server")


@pytest.fixture
def server(tmp_path):
    """Start a server in the foreground; stopped (and waited for) after the test."""
    procs = []

    def start(cmd: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@pytest.mark.parametrize("tree", ["published", "published_for_www_data"])
def test_nginx_as_www_data_serves_every_file(tree, request, server, embedded, tmp_path):
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed (scripts/install-deps installs it)")
    need_root("nginx")
    root, image = request.getfixturevalue(tree)
    upstream, upstream_log = embedded(root)
    port = free_port()
    base = f"http://127.0.0.1:{port}/kernels/"
    (tmp_path / "nginx.conf").write_text(standalone_nginx_conf(str(root), base, str(tmp_path), workers="1",
                                                               upstream=upstream))
    proc = server([NGINX, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])
    wait_http(base + "index.json", proc, "nginx")
    assert worker_users(proc.pid) == {"www-data"}
    files, nbytes = download_image(base, root, image, f"nginx ({tree})")
    payload = [f for f in image.iterdir() if f.is_file() and f.name not in ("metadata.json", "SHA256SUMS")]
    assert files == len(payload) >= 4 and nbytes == sum(f.stat().st_size for f in payload)
    assert fetch(base + "index.json")[1]["Cache-Control"] == "no-cache"
    check_proxied(base, image, upstream_log, "nginx")


APACHE_CONF = """# Debian's apache2 as its apache2.conf runs it, with pid, logs and locks in the test's directory
ServerRoot /etc/apache2
DefaultRuntimeDir {work}
PidFile {work}/apache2.pid
Mutex file:{work} default
ErrorLog {work}/error.log
LogLevel warn
User www-data
Group www-data
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
IncludeOptional mods-enabled/*.load
IncludeOptional mods-enabled/*.conf
<IfModule !mod_headers.c>
    LoadModule headers_module {modules}/mod_headers.so
</IfModule>
<IfModule !mod_proxy.c>
    LoadModule proxy_module {modules}/mod_proxy.so
</IfModule>
<IfModule !mod_proxy_http.c>
    LoadModule proxy_http_module {modules}/mod_proxy_http.so
</IfModule>
<Directory />
    Options FollowSymLinks
    AllowOverride None
    Require all denied
</Directory>
Include {work}/buildbot-kernel.conf
"""


def test_apache_as_www_data_serves_every_file(published, server, embedded, tmp_path):
    if not os.path.exists(APACHE):
        pytest.skip("apache2 is not installed (scripts/install-deps installs it)")
    need_root("apache2")
    root, image = published
    upstream, upstream_log = embedded(root)
    port = free_port()
    base = f"http://127.0.0.1:{port}/kernels/"
    (tmp_path / "buildbot-kernel.conf").write_text(render("apache", **snippet_vars(str(root), base,
                                                                                   upstream=upstream)))
    conf = tmp_path / "apache2.conf"
    conf.write_text(APACHE_CONF.format(work=tmp_path, port=port, modules=APACHE_MODULES))
    check = subprocess.run([APACHE, "-f", str(conf), "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = server([APACHE, "-f", str(conf), "-DFOREGROUND"])
    wait_http(base + "index.json", proc, "apache2")
    assert worker_users(proc.pid) == {"www-data"}
    files, nbytes = download_image(base, root, image, "apache2")
    payload = [f for f in image.iterdir() if f.is_file() and f.name not in ("metadata.json", "SHA256SUMS")]
    assert files == len(payload) >= 4 and nbytes == sum(f.stat().st_size for f in payload)
    assert fetch(base + "index.json")[1]["Cache-Control"] == "no-cache"
    for hidden in (".incoming/", ".state/index-cache.json"):
        with pytest.raises(urllib.error.HTTPError) as e:
            fetch(base + hidden)
        assert e.value.code in (403, 404)
    check_proxied(base, image, upstream_log, "apache2")


def test_a_group_tree_is_closed_to_nobody_and_open_to_www_data(published_for_www_data):
    """The group policy really restricts: NFS's nobody reads nothing, the group reads everything."""
    root, image = published_for_www_data
    www_data = Modes.for_group("www-data")
    paths = [root, *visible_paths(root)]
    assert www_data.unreadable(root) == [] and len(Modes().unreadable(root)) == len(paths)
    files = [str(p) for p in paths if p.is_file()]
    r = subprocess.run([*SETPRIV, "cat", str(image / "vmlinuz")], capture_output=True, text=True)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    as_www_data = ["setpriv", "--reuid=www-data", "--regid=www-data", "--init-groups"]
    r = subprocess.run([*as_www_data, "cat", *files], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    assert len(r.stdout) == sum(os.path.getsize(f) for f in files)
