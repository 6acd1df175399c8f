"""The "Kernels" dashboard in the Buildbot UI: test machines, recent bisects and the image tree at a glance.

A WSGI app (buildbot-wsgi-dashboards runs it in a thread); it reads the same state the services keep
(farm registry snapshot, ``<state>/bisects/*/result.json``, ``<root>/index.json``) and renders one
jinja2 template.  Read-only: nothing here can change a machine or an image.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jinja2
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from buildbot_kernel.imagetree.index import templates_dir
from buildbot_kernel.master.farm_service import FARM_SERVICE
from buildbot_kernel.util import named_service


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def dashboard_context(images_root: Path, state_dir: Path, machines: list[dict], base_url: str) -> dict:
    """Pure: what the page shows."""
    index = _read_json(images_root / "index.json") or {"images": []}
    branches: dict[str, dict] = {}
    for img in index.get("images", []):
        b = branches.setdefault(img.get("branch", "?"), {"count": 0, "latest": img})
        b["count"] += 1
    bisects = []
    for result in sorted((state_dir / "bisects").glob("*/result.json"), key=lambda p: p.stat().st_mtime,
                         reverse=True)[:20]:
        r = _read_json(result)
        if isinstance(r, dict):
            r.setdefault("id", result.parent.name)
            bisects.append(r)
    now = time.time()
    for m in machines:
        seen = m.get("last_seen") or 0
        m["seen_ago"] = f"{int(now - seen)} s ago" if seen else "never"
    return {"branches": branches, "images_total": len(index.get("images", [])), "machines": machines,
            "bisects": bisects, "base_url": base_url.rstrip("/"), "generated": index.get("generated", "")}


class KernelDashboard:
    def __init__(self, images_root: str, state_dir: str, base_url: str):
        self.images_root, self.state_dir, self.base_url = Path(images_root), Path(state_dir), base_url
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), autoescape=True)
        self.template = env.get_template("dashboard.html.j2")
        self.buildbot_api = None  # set by buildbot-wsgi-dashboards

    def _machines(self) -> list[dict]:
        master = getattr(self.buildbot_api, "master", None)
        farm = named_service(master, FARM_SERVICE) if master is not None else None
        if farm is None:
            return []
        return blockingCallFromThread(reactor, farm.snapshot)["machines"]

    def __call__(self, environ, start_response):
        ctx = dashboard_context(self.images_root, self.state_dir, self._machines(), self.base_url)
        body = self.template.render(**ctx).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(body)))])
        return [body]
