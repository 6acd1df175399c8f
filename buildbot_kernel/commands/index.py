"""``buildbot-kernel index``: regenerate every index file of an image tree by hand.

For an admin after manual changes when no master runs (with a master running, its watchdog does this).
"""

from __future__ import annotations

import stat
from pathlib import Path

from buildbot_kernel.cli import CommandError


def register(subparsers) -> None:
    p = subparsers.add_parser("index", help="regenerate the index files of an image tree",
                              description=__doc__.splitlines()[0])
    p.add_argument("--root", help="the image tree (default: images.root of --settings, taken as relative to the "
                   "settings file's directory, which is the master's for its settings.toml; give --root for a "
                   "settings file kept elsewhere)")
    p.add_argument("--base-url", help="URL the tree is served at (default: images.base_url of --settings)")
    p.add_argument("--settings", help="settings file to take --root/--base-url/--group from")
    p.add_argument("--group", help="the tree's readers' group (default: images.group of --settings, else none: "
                                   "world-readable); see docs/serving.md")
    p.add_argument("--retention", action="store_true",
                   help="also apply the retention of --settings (keep_per_branch, max_bytes); "
                        "bisect pins are not known here, so use it only with no bisect running")
    p.set_defaults(func=run)


def run(args) -> int:
    from buildbot_kernel.imagetree.modes import Modes
    from buildbot_kernel.imagetree.reserved import RefusedEntry
    from buildbot_kernel.imagetree.tree import ImageTree

    keep = budget = 0
    root, base_url, group = args.root, args.base_url, args.group
    if args.settings:
        from buildbot_kernel.settings import SettingsError, load, tree_root

        try:
            s = load(args.settings)
        except SettingsError as e:
            raise CommandError(str(e)) from None
        root = root or str(tree_root(s))
        base_url = base_url or s.images.base_url
        keep, budget = s.images.keep_per_branch, s.images.max_bytes
        group = s.images.group if group is None else group
    elif args.retention:
        raise CommandError("--retention needs --settings (the limits are in the settings file)")
    if not root or not base_url:
        raise CommandError("give --root DIR and --base-url URL (or --settings FILE)")
    if not Path(root).is_dir():
        raise CommandError(f"--root {root}: not a directory")
    if not base_url.startswith(("http://", "https://")):
        raise CommandError(f"--base-url {base_url!r}: expected an http:// or https:// URL")
    if group is None and Path(root).stat().st_mode & stat.S_ISGID:
        owner = Path(root).group()
        raise CommandError(f"--root {root} is a group-readable tree (setgid, group {owner}); give --group {owner} "
                           "(or --settings) to keep it so, or --group '' to make it world-readable")
    try:
        modes = Modes.for_group(group or "")
    except ValueError as e:
        raise CommandError(str(e).replace("images.group", "--group")) from None
    tree = ImageTree(root, base_url, keep_per_branch=keep, max_bytes=budget, modes=modes)
    try:
        if args.retention:
            print(tree.apply_retention().describe())
        result = tree.regenerate()
        tree.save_cache()
    except RefusedEntry as e:  # .state is a symlink or a file: no lock, no index (docs/serving.md)
        raise CommandError(str(e)) from None
    for path, why in sorted(result.skipped.items()):
        print(f"not listed: {path}: {why}")
    for problem in result.mode_problems:
        print(f"permission contract: {problem}")
    print(f"{len(result.images)} images listed; wrote {len(result.written)} files under {root}")
    return 0
