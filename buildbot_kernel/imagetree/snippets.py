"""Configuration for serving the image tree from Apache, nginx and NFS, rendered from templates/.

The same tree the embedded server serves, at the same ``images.base_url``: a test farm's URLs do not
change when an admin moves serving from the master to Apache or nginx.  The servers read the tree as their
own unprivileged users (``www-data``, NFS's ``nobody``), which the tree's permission contract allows
(docs/serving.md); nothing here asks for root.  What only the master can answer, the commit lookup
(``/sha/``) and the test farm's ``/machines/``, is proxied to the master's embedded server (``upstream``).
"""

from __future__ import annotations

import grp
import re
from urllib.parse import urlsplit

from buildbot_kernel.imagetree.index import make_env
from buildbot_kernel.util import reachable_host

TEMPLATES = {"apache": "apache.conf.j2", "nginx": "nginx.conf.j2", "nfs": "nfs-exports.j2"}
# a path every one of the three syntaxes takes unquoted and unescaped (no blanks, quotes, ; { } # $ \)
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@,=:~/-]*\Z")
_SAFE_CLIENTS = re.compile(r"^[A-Za-z0-9.*?:/@_-]+\Z")
_SAFE_UPSTREAM = re.compile(r"^http://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}\Z")


def embedded_server_url(bind: str, port: int) -> str:
    """Where a web server on the master's host reaches the embedded image server ("" when it is off,
    ``image_port = 0``)."""
    return f"http://{reachable_host(bind)}:{port}" if port else ""


def snippet_vars(root: str, base_url: str, nfs_clients: str = "*", access_log: str = "", group: str = "",
                 upstream: str = "", tls_cert: str = "", tls_key: str = "") -> dict:
    """Template variables; raises ValueError naming the setting when a value cannot go into a config file.

    ``upstream``: the embedded server's URL (:func:`embedded_server_url`) that ``/sha/`` and ``/machines/``
    are proxied to ("" = it is off: the snippets say so).  ``tls_cert``/``tls_key``: certificate and key
    files for an ``https`` base URL."""
    u = urlsplit(base_url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"images.base_url {base_url!r}: expected an http(s) URL such as "
                         "http://images.example.org/kernels/")
    prefix = (u.path.rstrip("/") or "") + "/"
    if not _SAFE_PATH.match(prefix):
        raise ValueError(f"images.base_url {base_url!r}: its path may only hold letters, digits and ._+@,=:~/-")
    root = root.rstrip("/") or "/"
    if not _SAFE_PATH.match(root):
        raise ValueError(f"images.root {root!r}: the generated configs need an absolute path of letters, digits "
                         "and ._+@,=:~/- only (no blanks or quotes); move or symlink the tree")
    if not _SAFE_CLIENTS.match(nfs_clients):
        raise ValueError(f"--nfs-clients {nfs_clients!r}: expected a host, network (10.0.0.0/8), @netgroup or *")
    if upstream and not _SAFE_UPSTREAM.match(upstream):
        raise ValueError(f"[server] image_bind/image_port {upstream!r}: expected http://<address>:<port>")
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("--tls-cert and --tls-key: give both (the certificate chain and its private key) or neither")
    if tls_cert and u.scheme != "https":
        raise ValueError(f"--tls-cert: images.base_url {base_url!r} is http; TLS needs an https:// base_url "
                         "(the URLs in the index are made from it)")
    for option, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path and not _SAFE_PATH.match(path):
            raise ValueError(f"{option} {path!r}: expected an absolute path of letters, digits and ._+@,=:~/- only")
    nfs_options = "ro,all_squash,no_subtree_check,sync"
    if group:
        # all_squash maps every client to nobody:nogroup; a group-readable tree must map them to its group
        nfs_options += f",anongid={grp.getgrnam(group).gr_gid}"
    port = u.port or (443 if u.scheme == "https" else 80)
    return {
        "root": root,
        "root_regex": re.escape(root),
        "base_url": base_url,
        "prefix": prefix,
        "server_name": u.hostname,
        "port": port,
        "https": u.scheme == "https",
        "listen": f"{port} ssl" if u.scheme == "https" else str(port),
        "nfs_clients": nfs_clients,
        "nfs_options": nfs_options,
        "group": group,
        "access_log": access_log,
        "upstream": upstream,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
    }


def render(kind: str, **variables) -> str:
    return make_env().get_template(TEMPLATES[kind]).render(**variables)


def standalone_nginx_conf(root: str, base_url: str, workdir: str, workers: str = "auto",
                          user: str = "www-data", upstream: str = "") -> str:
    """A complete nginx.conf around the nginx snippet, for running nginx in the foreground with all its
    files under ``workdir`` (the benchmark and the tests compare it with the embedded server).  Started
    as root, the workers run as ``user`` as Debian's nginx.conf has them (nginx ignores it otherwise)."""
    server = render("nginx", **snippet_vars(root, base_url, access_log=f"{workdir}/access.log", upstream=upstream))
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temps = " ".join(f"{k}_temp_path {workdir};" for k in kinds)
    return (f"daemon off;\nuser {user};\nworker_processes {workers};\npid {workdir}/nginx.pid;\n"
            f"error_log {workdir}/error.log;\nevents {{ worker_connections 1024; }}\n"
            f"http {{\n{temps}\n{server}\n}}\n")
