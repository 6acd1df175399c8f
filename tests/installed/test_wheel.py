"""The built wheel works outside the checkout: ``buildbot-kernel run`` there reaches a running master
that publishes an image, ``index`` regenerates the tree, ``stop`` (from yet another directory) stops it.

The wheel is built from a copy of the checkout's files and installed with ``--no-index --no-deps`` into a
fresh venv in a temporary directory, so nothing is downloaded.  Its dependencies (Buildbot, Twisted,
jinja2, ...) are not installed a second time: a ``.pth`` file puts the running interpreter's
site-packages on the venv's path *after* its own (a plain path line, so the ``.pth`` files in there, such
as an editable install of this checkout, are not run), and the dependencies' console scripts
(``buildbot``, ``buildbot-worker``) are written for the venv's interpreter.  The test then checks that
``buildbot_kernel`` is imported from the venv, and runs everything with no ``PYTHONPATH`` and from
directories outside the checkout.

(The directory is not called ``tests/packaging``: pytest puts ``tests/`` on ``sys.path``, and a
``packaging`` package there would hide the ``packaging`` library Buildbot imports.)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import urllib.request
from pathlib import Path

import pytest

from tests.integration.harness import FixtureRepo, free_port, settings_text, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.packaging]

REPO = Path(__file__).resolve().parents[2]
DEPENDENCY_SCRIPTS = {"buildbot": "buildbot", "buildbot-worker": "buildbot-worker"}  # script: distribution


def _run(cmd, cwd, env, timeout=300) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def _source_copy(dest: Path) -> Path:
    """The checkout's files (tracked and new, not ignored): what a release tarball would hold."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _dependency_script(venv: Path, script: str, dist: str) -> None:
    (ep,) = [e for e in importlib.metadata.distribution(dist).entry_points
             if e.group == "console_scripts" and e.name == script]
    module, _, attr = ep.value.partition(":")
    path = venv / "bin" / script
    path.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {attr}\nsys.exit({attr}())\n")
    path.chmod(0o755)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("packaging")
    src = _source_copy(base / "src")
    # the build uses this interpreter's setuptools and wheel (the test extra); what is built is then run
    # with no PYTHONPATH at all
    if not (_importable("wheel") or _importable("setuptools.command.bdist_wheel")):
        pytest.fail("building a wheel offline needs the wheel package or setuptools>=70.1 in this environment "
                    "(pip install -e '.[test]' installs it)")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", base / "dist", src], base, os.environ)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    (wheel,) = (base / "dist").glob("buildbot_kernel-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", venv], base, env)
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel], base, env)
    purelib = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        base, env).stdout.strip())
    (purelib / "zz-shared-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for script, dist in DEPENDENCY_SCRIPTS.items():
        _dependency_script(venv, script, dist)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin"
    return base, venv, env, wheel


def test_the_wheel_carries_the_package_data(installed):
    base, venv, env, wheel = installed
    out = _run([venv / "bin" / "python", "-c",
                "import buildbot_kernel, os; from buildbot_kernel import resources as r; "
                "print(buildbot_kernel.__file__); print(r.templates_dir()); print(r.shipped('master.cfg')); "
                "print(os.access(r.scripts_dir() / 'build-stage1-ramfs', os.X_OK))"], base, env).stdout.split()
    site = str(venv / "lib")
    assert all(p.startswith(site) for p in out[:3]), out  # the venv's copy, not the checkout's
    assert out[3] == "True"  # the stage-1 scripts stay executable
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert _run([venv / "bin" / "buildbot-kernel", "--version"], base, env).stdout == f"buildbot-kernel {version}\n"


def test_run_index_stop_outside_the_checkout(installed, tmp_path):
    base, venv, env, wheel = installed
    env = {**env, "XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(tmp_path)}
    repo = FixtureRepo(tmp_path, branches=("drm-tip",))
    lab = tmp_path / "lab"
    lab.mkdir()
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    (lab / "my-settings.toml").write_text(settings_text(str(repo.bare), ["drm-tip"], ports))
    bbk = venv / "bin" / "buildbot-kernel"
    try:
        out = _run([bbk, "run", "--settings", "my-settings.toml"], lab, env).stdout
        assert "buildbot-kernel is running" in out
        master = lab / "master"
        pid = int((master / "twistd.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0].decode().startswith(str(venv)), cmdline  # the master runs on the venv's interpreter
        assert b"PYTHONPATH=" not in Path(f"/proc/{pid}/environ").read_bytes()
        base_url = f"http://127.0.0.1:{ports['image']}/"

        def published():
            try:
                with urllib.request.urlopen(base_url + "index.json", timeout=5) as r:
                    return json.load(r)["images"]
            except OSError:
                return None
        images = wait_for(published, 120, "an image of drm-tip in the tree")
        assert images[0]["sha"] == repo.head("drm-tip")
        root = master / "images"
        listing = _run([bbk, "images", "list", "--branch", "drm-tip", "--index", base_url.rstrip("/")], lab, env)
        assert listing.stdout.split("\t")[0] == images[0]["name"]

        (root / "index.html").unlink()
        out = _run([bbk, "index", "--settings", master / "settings.toml"], lab, env).stdout
        assert "1 images listed" in out or "1 image listed" in out, out
        assert images[0]["name"] in (root / "index.html").read_text()  # rendered from the wheel's templates

        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        out = _run([bbk, "stop"], elsewhere, env).stdout
        assert str(master) in out
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, "the master process to exit")
        r = subprocess.run([bbk, "stop"], cwd=elsewhere, env=env, capture_output=True, text=True)
        assert r.returncode == 1 and "nothing is running" in r.stderr
    finally:
        for d, tool in ((lab / "worker", "buildbot-worker"), (lab / "master", "buildbot")):
            if (d / "twistd.pid").exists():
                subprocess.run([venv / "bin" / tool, "stop", str(d)], env=env, capture_output=True)
