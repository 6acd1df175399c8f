"""buildbot-kernel units: systemd units for the master and a worker, with this installation's paths.

The units run Buildbot's own ``buildbot start --nodaemon`` / ``buildbot-worker start --nodaemon`` on the
directories ``buildbot-kernel run`` made, so systemd supervises exactly what ``run`` would start.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import sys
from pathlib import Path

from buildbot_kernel.cli import CommandError

# systemd takes these unquoted: no blanks (word splitting), no % (specifiers), no quotes or backslashes
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@,=:~/-]*\Z")
_SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
TEMPLATES = {"master": "master.service.j2", "worker": "worker.service.j2"}


def register(subparsers) -> None:
    p = subparsers.add_parser("units", help="print systemd units for the master and the local worker",
                              description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="master", help="master directory (default: ./master)")
    p.add_argument("--worker-dir", default=None, help="worker directory (default: worker beside the master)")
    p.add_argument("--user", default=None, help="user the services run as (default: the directory's owner)")
    p.add_argument("--group", default=None, help="their group (default: the user's primary group)")
    p.add_argument("--settings", default=None,
                   help="settings file the master reads (sets BUILDBOT_KERNEL_SETTINGS; default: the "
                        "settings.toml in the master directory)")
    p.add_argument("--only", choices=list(TEMPLATES), help="print just one of them")
    p.set_defaults(func=run)


def unit_vars(master_dir: Path, worker_dir: Path, user: str, group: str, settings: str = "",
              bin_dir: Path | None = None) -> dict:
    """Template variables; raises ValueError naming the option whose value systemd would misread."""
    bin_dir = bin_dir or Path(sys.executable).parent
    for option, value in (("--dir", str(master_dir)), ("--worker-dir", str(worker_dir)),
                          ("--settings", settings), ("the installation's bin directory", str(bin_dir))):
        if value and not _SAFE_PATH.match(value):
            raise ValueError(f"{option} {value!r}: a unit needs an absolute path of letters, digits and "
                             "._+@,=:~/- only (no blanks or %); move or symlink it")
    for option, value in (("--user", user), ("--group", group)):
        if not _SAFE_NAME.match(value):
            raise ValueError(f"{option} {value!r}: expected a user or group name such as buildbot")
    return {"master_dir": str(master_dir), "worker_dir": str(worker_dir), "user": user, "group": group,
            "settings": settings, "bin": str(bin_dir)}


def render(kind: str, **variables) -> str:
    from buildbot_kernel.imagetree.index import make_env

    return make_env().get_template(TEMPLATES[kind]).render(**variables)


def run(args) -> int:
    master_dir = Path(args.dir).resolve()
    worker_dir = Path(args.worker_dir).resolve() if args.worker_dir else master_dir.parent / "worker"
    try:
        owner = pwd.getpwuid(os.stat(master_dir).st_uid) if master_dir.exists() else pwd.getpwuid(os.getuid())
        user = args.user or owner.pw_name
        group = args.group or grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except KeyError as e:
        raise CommandError(f"--user/--group: no such user or group ({e})") from None
    settings = str(Path(args.settings).resolve()) if args.settings else ""
    try:
        variables = unit_vars(master_dir, worker_dir, user, group, settings)
    except ValueError as e:
        raise CommandError(str(e)) from None
    kinds = [args.only] if args.only else list(TEMPLATES)
    print("\n".join(render(k, with_master=args.only is None or k == "master", **variables) for k in kinds))
    return 0
