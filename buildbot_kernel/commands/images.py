"""``buildbot-kernel images``: find an image by commit, verify an image directory, serve a tree."""

from __future__ import annotations

import json

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

    v = sub.add_parser("verify", help="check image directories (every file against its sha256)")
    v.add_argument("image_dir", nargs="+")
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


def verify(args) -> int:
    from buildbot_kernel.imagetree.package import verify_image_dir

    bad = 0
    for d in args.image_dir:
        problems = verify_image_dir(d)
        print(f"{d}: " + ("ok" if not problems else "; ".join(problems)))
        bad += bool(problems)
    return 1 if bad else 0


def serve(args) -> int:
    import os

    from buildbot_kernel.imagetree.server import serve_forever

    if not os.path.isdir(args.root):
        raise CommandError(f"--root {args.root}: not a directory")
    serve_forever(args.root, args.port, args.bind, args.access_log)
    return 0
