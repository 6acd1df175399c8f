"""``buildbot-kernel snippets``: Apache and nginx configuration and the NFS export line for the tree."""

from __future__ import annotations

from buildbot_kernel.cli import CommandError


def register(subparsers) -> None:
    p = subparsers.add_parser("snippets", help="print Apache/nginx config and the NFS export for the tree",
                              description=__doc__.splitlines()[0])
    p.add_argument("--settings", required=True, help="the settings file (images.root, images.base_url)")
    p.add_argument("--only", choices=["apache", "nginx", "nfs"], help="print just one of them")
    p.add_argument("--nfs-clients", default="*",
                   help="clients allowed to mount the export, e.g. 192.168.10.0/24 (default: *)")
    p.add_argument("--tls-cert", default="",
                   help="certificate (chain) file for an https images.base_url, e.g. /etc/ssl/certs/images.pem")
    p.add_argument("--tls-key", default="", help="its private key file, e.g. /etc/ssl/private/images.key")
    p.set_defaults(func=run)


def run(args) -> int:
    from buildbot_kernel.imagetree.snippets import TEMPLATES, embedded_server_url, render, snippet_vars
    from buildbot_kernel.settings import SettingsError, load, tree_root

    try:
        s = load(args.settings)
    except SettingsError as e:
        raise CommandError(str(e)) from None
    try:
        upstream = embedded_server_url(s.listener("image_bind"), s.server.image_port)
        variables = snippet_vars(str(tree_root(s)), s.images.base_url, args.nfs_clients,
                                 group=s.images.group, upstream=upstream, tls_cert=args.tls_cert,
                                 tls_key=args.tls_key)
    except ValueError as e:
        raise CommandError(str(e)) from None
    kinds = [args.only] if args.only else list(TEMPLATES)
    print("\n\n".join(render(k, **variables).rstrip("\n") for k in kinds))
    return 0
