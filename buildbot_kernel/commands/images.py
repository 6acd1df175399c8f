"""buildbot-kernel images: find or list images, verify an image directory, serve a tree."""

from __future__ import annotations

import json
import os
import sys

from buildbot_kernel.cli import CommandError


def register(subparsers) -> None:
    p = subparsers.add_parser("images", help="find, verify or serve kernel images",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="images_command", metavar="ACTION")
    sub.required = True

    index_help = "the tree's index: its base URL (http://server:8011/), its index.json URL, or a path (file or tree)"
    f = sub.add_parser("find", help="the image(s) of a commit (full sha or unique prefix), or of a branch's head",
                       description="Print name and URL of the images of a commit, or with 'latest' and --branch "
                                   "the image(s) the branch's latest names (its head's, one per build config).")
    f.add_argument("sha", metavar="SHA|latest", help="a commit (full sha or unique prefix), or latest")
    f.add_argument("--index", required=True, help=index_help)
    f.add_argument("--branch", help="only images of this branch (as git names it, or its directory)")
    f.add_argument("--build", help="only images of this build config")
    f.add_argument("--json", action="store_true", help="print the index entries as JSON")
    f.set_defaults(func=find)

    ls = sub.add_parser("list", help="the images of the tree, of a branch or of a build config",
                        description="Print the images in the index's order (per branch: the head's image first, "
                                    "then the branch's history), one per line: name, branch, marks, URL.")
    ls.add_argument("--index", required=True, help=index_help)
    ls.add_argument("--branch", help="only images of this branch (as git names it, or its directory)")
    ls.add_argument("--build", help="only images of this build config")
    ls.add_argument("--json", action="store_true", help="print the index entries as JSON")
    ls.set_defaults(func=list_images)

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


def _entries(index: str) -> list[dict]:
    """The index's checked entries; an entry left out is said on stderr (a hostile or damaged index)."""
    from buildbot_kernel.imagetree.indexfile import IndexUnreadable, read_index

    try:
        doc = read_index(index)
    except IndexUnreadable as e:
        raise CommandError(str(e)) from None
    for why in doc.skipped:
        print(f"left out: {why}", file=sys.stderr)
    return doc.entries()


def _print(images: list[dict], as_json: bool, **extra) -> None:
    if as_json:
        print(json.dumps({**extra, "images": images}, indent=2))
    else:
        for e in images:
            print(f"{e.get('name', '?')}\t{e.get('url', '?')}")


def find(args) -> int:
    from buildbot_kernel.imagetree.lookup import LookupError_, ShaLookup, latest

    entries = _entries(args.index)
    if args.sha == "latest":
        if not args.branch:
            raise CommandError("find latest needs --branch NAME (the branch whose latest image to print)")
        images = latest(entries, args.branch, args.build)
        if not images:
            raise CommandError(f"branch {args.branch!r} has no latest image in {args.index}"
                               + (f" for build config {args.build!r}" if args.build else ""))
        _print(images, args.json, branch=args.branch)
        return 0
    try:
        sha, images = ShaLookup(entries).find(args.sha, branch=args.branch, build=args.build)
    except LookupError_ as e:
        raise CommandError(str(e)) from None
    _print(images, args.json, sha=sha)
    return 0


def list_images(args) -> int:
    from buildbot_kernel.imagetree.lookup import select

    images = select(_entries(args.index), args.branch, args.build)
    if args.json:
        _print(images, True)
        return 0
    for e in images:
        marks = ",".join(m for m in ("head", "on_demand") if e.get(m) is True) or "-"
        print(f"{e.get('name', '?')}\t{e.get('branch', '?')}\t{marks}\t{e.get('url', '?')}")
    if not images:
        print("no images" + (f" on branch {args.branch!r}" if args.branch else "")
              + (f" with build config {args.build!r}" if args.build else ""), file=sys.stderr)
        return 1
    return 0


def _verify_modes(args):
    from buildbot_kernel.imagetree.modes import Modes

    group = args.group or ""
    if args.settings:
        from buildbot_kernel.settings import SettingsError, load

        try:
            group = load(args.settings).images.group
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
