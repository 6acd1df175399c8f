"""Configuration for serving the image tree from Apache, nginx and NFS, rendered from templates/.

The same tree the embedded server serves, at the same ``images.base_url``: a test farm's URLs do not
change when an admin moves serving from the master to Apache or nginx.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from buildbot_kernel.imagetree.index import make_env

TEMPLATES = {"apache": "apache.conf.j2", "nginx": "nginx.conf.j2", "nfs": "nfs-exports.j2"}


def snippet_vars(root: str, base_url: str, nfs_clients: str = "*", access_log: str = "") -> dict:
    u = urlsplit(base_url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"images.base_url {base_url!r}: expected an http(s) URL such as "
                         "http://images.example.org/kernels/")
    prefix = (u.path.rstrip("/") or "") + "/"
    port = u.port or (443 if u.scheme == "https" else 80)
    return {
        "root": root.rstrip("/") or "/",
        "root_regex": re.escape(root.rstrip("/")),
        "base_url": base_url,
        "prefix": prefix,
        "server_name": u.hostname,
        "port": port,
        "listen": f"{port} ssl" if u.scheme == "https" else str(port),
        "nfs_clients": nfs_clients,
        "access_log": access_log,
    }


def render(kind: str, **variables) -> str:
    return make_env().get_template(TEMPLATES[kind]).render(**variables)


def standalone_nginx_conf(root: str, base_url: str, workdir: str, workers: str = "auto") -> str:
    """A complete nginx.conf around the nginx snippet, for running nginx in the foreground with all its
    files under ``workdir`` (the benchmark and the tests compare it with the embedded server)."""
    server = render("nginx", **snippet_vars(root, base_url, access_log=f"{workdir}/access.log"))
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temps = " ".join(f"{k}_temp_path {workdir};" for k in kinds)
    # `user root` only matters when started as root (CI containers): workers must read the tree
    return (f"daemon off;\nuser root;\nworker_processes {workers};\npid {workdir}/nginx.pid;\n"
            f"error_log {workdir}/error.log;\nevents {{ worker_connections 1024; }}\n"
            f"http {{\n{temps}\n{server}\n}}\n")
