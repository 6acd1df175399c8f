"""``buildbot-kernel run`` / ``stop``: a master, a local worker and the image server, from one command.

It uses Buildbot's own tools (``buildbot create-master/start``, ``buildbot-worker create-worker/start``),
so what it sets up is an ordinary Buildbot installation an admin can keep managing with them.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from buildbot_kernel import resources
from buildbot_kernel import settings as settings_mod
from buildbot_kernel.cli import CommandError
from buildbot_kernel.util import reachable_host

LAST_RUN = "last-run.json"  # in the user's state directory: the directories `run` last started
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    exe = BIN / name
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def _call(*cmd, secret: str = "") -> None:
    """Run a tool; when it fails, say what ran and what it printed, ``secret`` (a password on the command
    line) written as ``***`` wherever it shows."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        said = f"{' '.join(map(str, cmd))} failed:\n{r.stdout}{r.stderr}"
        raise CommandError(said.replace(secret, "***") if secret else said)


def install_master_cfg(master_dir: Path, shipped: Path | None = None) -> str:
    """Put the shipped master.cfg in place, unless the admin changed the one there (say so, keep it)."""
    shipped = shipped or resources.shipped("master.cfg")
    target = master_dir / "master.cfg"
    if not target.exists():
        shutil.copy(shipped, target)
        return "installed"
    if filecmp.cmp(shipped, target, shallow=False):
        return "unchanged"
    print(f"keeping {target}: it differs from the shipped {shipped} (compare them after an upgrade)")
    return "kept"


def settings_path(master_dir: Path, settings_file: Path | None, environ=os.environ) -> Path:
    """The settings file the master will read: ``$BUILDBOT_KERNEL_SETTINGS`` if set (master.cfg reads
    that one), else ``settings.toml`` in the master directory (installed from ``--settings`` or the
    shipped example the first time)."""
    if environ.get(settings_mod.ENV_VAR):
        env_path = Path(environ[settings_mod.ENV_VAR])
        if settings_file is not None and settings_file.resolve() != env_path.resolve():
            raise CommandError(f"--settings {settings_file} and ${settings_mod.ENV_VAR}={env_path} disagree: the "
                               f"master reads ${settings_mod.ENV_VAR}; give one of them")
        return env_path
    target = master_dir / "settings.toml"
    if settings_file is not None:
        shutil.copy(settings_file, target)
    elif not target.exists():
        shutil.copy(resources.shipped("settings.toml"), target)
    return target


def prepare_master(master_dir: Path, settings_file: Path | None, environ=os.environ) -> settings_mod.Settings:
    if not (master_dir / "buildbot.tac").exists():
        _call(_tool("buildbot"), "create-master", "-q", master_dir)
    install_master_cfg(master_dir)
    path = settings_path(master_dir, settings_file, environ)
    try:
        return settings_mod.load(path)
    except settings_mod.SettingsError as e:
        raise CommandError(str(e)) from None


def worker_master_address(s: settings_mod.Settings) -> str:
    """Where the local worker finds the PB port: the worker listener's address, loopback when it
    listens on every interface."""
    return reachable_host(s.listener("worker_bind"))


def run(args) -> int:
    master_dir = Path(args.dir).resolve()
    worker_dir = Path(args.worker_dir).resolve() if args.worker_dir else master_dir.parent / "worker"
    s = prepare_master(master_dir, Path(args.settings) if args.settings else None)
    _call(_tool("buildbot"), "checkconfig", master_dir)
    local = s.workers[0]
    if not (worker_dir / "buildbot.tac").exists():
        _call(_tool("buildbot-worker"), "create-worker", "-q", worker_dir,
              f"{worker_master_address(s)}:{s.server.worker_port}", local.name, local.password,
              secret=local.password)
    _call(_tool("buildbot"), "start", master_dir)
    _call(_tool("buildbot-worker"), "start", worker_dir)
    record_run(master_dir, worker_dir)
    web = s.server.url or f"http://localhost:{s.server.web_port}/"
    print(f"buildbot-kernel is running: {s.server.title}")
    print(f"  web UI and REST API  {web}")
    if s.server.image_port:
        print(f"  image tree           {s.images.base_url}/  (index.json, index.html)")
    print(f"  master directory     {master_dir}   (settings: {s.path})")
    print(f"  local worker         {worker_dir}   ({local.name})")
    print("  stop with            buildbot-kernel stop")
    return 0


def record_run(master_dir: Path, worker_dir: Path, environ=os.environ) -> None:
    """Remember where `run` started a master, so `stop` finds it from any directory."""
    state = resources.state_dir(environ)
    try:
        state.mkdir(parents=True, exist_ok=True)
        (state / LAST_RUN).write_text(json.dumps({"master": str(master_dir), "worker": str(worker_dir)}) + "\n")
    except OSError as e:  # the master runs all the same; only `stop` without --dir needs this
        print(f"note: cannot record the master directory in {state}: {e}; stop it with --dir {master_dir}")


def find_master(dir_arg: str | None, worker_arg: str | None, cwd: Path,
                environ=os.environ) -> tuple[Path, Path] | None:
    """The master (and local worker) `stop` means: --dir if given, else ./master when it is a master
    directory, else the one `run` last started (recorded in the user's state directory)."""
    def worker_for(master_dir: Path, recorded: str | None = None) -> Path:
        if worker_arg:
            return Path(worker_arg).resolve()
        return Path(recorded) if recorded else master_dir.parent / "worker"

    if dir_arg:
        master_dir = (cwd / dir_arg).resolve()
        return master_dir, worker_for(master_dir)
    local = (cwd / "master").resolve()
    if (local / "buildbot.tac").exists():
        return local, worker_for(local)
    try:
        last = json.loads((resources.state_dir(environ) / LAST_RUN).read_text())
        master_dir = Path(last["master"])
        worker = last.get("worker")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(worker, str | None) or not (master_dir / "buildbot.tac").exists():
        return None
    return master_dir, worker_for(master_dir, worker)


def _running(d: Path) -> bool:
    """A twistd.pid naming a live process (a stale pid file after a crash means: not running)."""
    try:
        pid = int((d / "twistd.pid").read_text().strip())
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's: `buildbot stop` will say what it can do
        return True
    except (OSError, ValueError):
        return False
    return True


def stop(args) -> int:
    found = find_master(args.dir, args.worker_dir, Path.cwd())
    if found is None:
        print("buildbot-kernel stop: no master found: none in ./master and none recorded by `buildbot-kernel "
              "run`; give its directory with --dir", file=sys.stderr)
        return 1
    master_dir, worker_dir = found
    stopped = []
    for tool, d in ((_tool("buildbot-worker"), worker_dir), (_tool("buildbot"), master_dir)):
        if _running(d):
            r = subprocess.run([tool, "stop", str(d)], capture_output=True, text=True)
            if r.returncode != 0 or _running(d):
                raise CommandError(f"{tool} stop {d} failed:\n{r.stdout}{r.stderr}")
            stopped.append(str(d))
    if not stopped:
        print(f"buildbot-kernel stop: nothing is running in {master_dir} (nor the worker {worker_dir})",
              file=sys.stderr)
        return 1
    print("stopped " + ", ".join(stopped))
    return 0


def register(sub) -> None:
    for name, func, text in (("run", run, "create (first time) and start the master, a local worker and the "
                                          "image server"),
                             ("stop", stop, "stop what `run` started")):
        p = sub.add_parser(name, help=text, description=text)
        if name == "run":
            p.add_argument("--dir", default="master", help="master directory (default: ./master)")
        else:
            p.add_argument("--dir", default=None,
                           help="master directory (default: ./master if there is one, else the one "
                                "`buildbot-kernel run` last started)")
        p.add_argument("--worker-dir", default=None,
                       help="local worker directory (default: worker beside the master directory)")
        if name == "run":
            p.add_argument("--settings", default=None,
                           help="settings file to install into the master directory (default: keep the one "
                                "there, or copy the shipped settings.toml)")
        p.set_defaults(func=func)
