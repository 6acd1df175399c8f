"""``buildbot-kernel images``: find an image by commit, verify an image directory, serve a tree."""

from __future__ import annotations

import json
import os

from buildbot_kernel.cli import CommandError


def register(subparsers) -> None:
    p = subparsers.add_parser("images", help="find, verify or serve kernel images",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="images_command", metavar="ACTION")
    sub.required = True

    f = sub.add_parser("find", help="the image(s) of a commit: full sha or unique prefix")
    f.add_argument("sha")
    f.add_argument("--index", required=True,
                   help="index.json of the tree: a URL (http://server:8011/) or a path (file or tree)")
    f.add_argument("--branch", help="only images of this branch")
    f.add_argument("--build", help="only images of this build config")
    f.add_argument("--json", action="store_true", help="print the index entries as JSON")
    f.set_defaults(func=find)

    v = sub.add_parser("verify", help="check image directories (every file against its sha256) and that the "
                                      "tree's readers (web server, NFS) can read them")
    v.add_argument("image_dir", nargs="+", help="an image directory, or a tree root (every image in it)")
    who = v.add_mutually_exclusive_group()
    who.add_argument("--group", default=None,
                     help="the readers are this group (default: everyone, i.e. world-readable)")
    who.add_argument("--settings", help="take the readers from images.group of this settings file")
    v.set_defaults(func=verify)

    s = sub.add_parser("serve", help="serve a tree with the embedded server (what the master runs)")
    s.add_argument("--root", required=True)
    s.add_argument("--port", type=int, default=8011, help="0 = any free port (printed)")
    s.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--access-log", help="access log file (default: standard output)")
    s.set_defaults(func=serve)


def find(args) -> int:
    from buildbot_kernel.imagetree.lookup import LookupError_, ShaLookup, load_index

    try:
        data = load_index(args.index)
        sha, images = ShaLookup(data["images"]).find(args.sha, branch=args.branch, build=args.build)
    except LookupError_ as e:
        raise CommandError(str(e)) from None
    if args.json:
        print(json.dumps({"sha": sha, "images": images}, indent=2))
    else:
        for e in images:
            print(f"{e.get('name', '?')}\t{e.get('url', '?')}")
    return 0


def _verify_modes(args):
    from buildbot_kernel.imagetree.modes import Modes

    group = args.group or ""
    if args.settings:
        from buildbot_kernel.settings import SettingsError, load

        try:
            group = load(args.settings).images["group"]
        except SettingsError as e:
            raise CommandError(str(e)) from None
    try:
        return Modes.for_group(group)
    except ValueError as e:
        raise CommandError(str(e).replace("images.group", "--group")) from None


def _image_dirs(path: str) -> list[str]:
    """``path`` itself when it is an image directory, else the image directories of the tree it roots."""
    from buildbot_kernel.imagetree.package import METADATA
    from buildbot_kernel.imagetree.scan import is_hidden

    if os.path.exists(os.path.join(path, METADATA)):
        return [path]
    out = []
    for branch in sorted(os.listdir(path)):
        bpath = os.path.join(path, branch)
        if is_hidden(branch) or not os.path.isdir(bpath) or os.path.islink(bpath):
            continue
        out += [os.path.join(bpath, n) for n in sorted(os.listdir(bpath))
                if not is_hidden(n) and os.path.isdir(os.path.join(bpath, n))]
    return out


def verify(args) -> int:
    """Content (sizes, sha256, manifest) of each image, then modes: every path the configured readers
    cannot reach or read, including the directories above (docs/serving.md, the permission contract)."""
    from buildbot_kernel.imagetree.package import verify_image_dir

    modes = _verify_modes(args)
    bad = 0
    for top in args.image_dir:
        if not os.path.isdir(top):
            print(f"{top}: not a directory")
            bad += 1
            continue
        for d in _image_dirs(top):
            problems = verify_image_dir(d)
            print(f"{d}: " + ("ok" if not problems else "; ".join(problems)))
            bad += bool(problems)
        unreadable = modes.unreadable(top)
        for line in unreadable:
            print(f"unreadable: {line}")
        print(f"{top}: " + (f"{len(unreadable)} paths {modes.readers} cannot read" if unreadable
                            else f"readable by {modes.readers}"))
        bad += bool(unreadable)
    return 1 if bad else 0


def serve(args) -> int:
    from buildbot_kernel.imagetree.server import serve_forever

    if not os.path.isdir(args.root):
        raise CommandError(f"--root {args.root}: not a directory")
    serve_forever(args.root, args.port, args.bind, args.access_log)
    return 0
