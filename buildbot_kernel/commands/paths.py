"""buildbot-kernel paths: where this installation keeps its shipped files and its cache.

The stage-1/stage-2 scripts an admin installs on test machines, the example settings.toml and the
templates are package data, so their place depends on how buildbot-kernel was installed; this prints it.
"""

from __future__ import annotations

from buildbot_kernel import resources

ENTRIES = (
    ("scripts", "stage-1/stage-2 scripts (fetch-stage1-kernel, build-stage1-ramfs, stage1/, stage2/)",
     resources.scripts_dir),
    ("settings", "the example settings.toml", lambda: resources.shipped("settings.toml")),
    ("master.cfg", "the master.cfg run installs", lambda: resources.shipped("master.cfg")),
    ("templates", "index pages, web server snippets, systemd units", resources.templates_dir),
    ("cache", "the farm's stage-1 kernel and ramfs ($BUILDBOT_KERNEL_CACHE)", lambda: resources.cache_dir()),
)


def register(subparsers) -> None:
    p = subparsers.add_parser("paths", help="print where the shipped scripts, example settings and cache are",
                              description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", choices=[name for name, _, _ in ENTRIES],
                   help="print just this path (for scripts: $(buildbot-kernel paths scripts))")
    p.set_defaults(func=run)


def run(args) -> int:
    for name, what, where in ENTRIES:
        if args.name == name:
            print(where())
        elif args.name is None:
            print(f"{name:<11} {where()}   ({what})")
    return 0
