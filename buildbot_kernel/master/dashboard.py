"""The "Kernels" dashboard in the Buildbot UI: branch heads, bisects, test machines and charts at a glance.

A WSGI app (buildbot-wsgi-dashboards runs it in a thread and puts the HTML of ``index.html`` into the
web UI's page with ``innerHTML``, where no script runs).  So ``index.html`` is only a frame around
``page.html``, a whole document that reloads itself (``<meta http-equiv="refresh">``) and runs no script
at all (its Content-Security-Policy forbids them).  Master data (builds, the pollers' heads, the farm)
is read on the reactor thread with ``blockingCallFromThread``; the rest is files: ``index.json`` and
``<state>/bisects/<id>/``, whose result.json and bisect.log are also served here.  Read-only.
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import jinja2
from markupsafe import Markup
from twisted.internet import defer, reactor
from twisted.internet.threads import blockingCallFromThread
from twisted.python import log

from buildbot_kernel.bisect import records
from buildbot_kernel.buildbot_adapter import build_steps, named_service, poller_heads, step_logs
from buildbot_kernel.imagetree.index import templates_dir
from buildbot_kernel.imagetree.indexfile import IndexDoc, IndexUnreadable, read_index
from buildbot_kernel.master import dashboard_data as data
from buildbot_kernel.master import dashboard_plots as plots
from buildbot_kernel.master.farm_service import FARM_SERVICE

REFRESH_SECONDS = 30  # page.html?refresh=N picks another interval (a wall screen), within REFRESH_RANGE
REFRESH_RANGE = (2, 3600)
BISECT_BUILDER = "bisect"
RECENT_BUILDS = 30  # per builder and page view: each one's properties are a database query
BUILD_PROPS = ["commit_sha", "commit_subject", "got_revision", "revision", "bisect_id", "image_name"]
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'self'; base-uri 'none'; form-action 'none'")
SERVED_FILES = {records.RESULT: "application/json", records.LOG: "text/plain"}




def _plain_build(b: dict) -> dict:
    props = {k: v[0] for k, v in (b.get("properties") or {}).items() if isinstance(v, list | tuple) and v}

    def ts(v):
        return v.timestamp() if hasattr(v, "timestamp") else v
    return {"buildid": b["buildid"], "builderid": b["builderid"], "number": b["number"],
            "results": b.get("results"), "complete": b.get("complete"), "state_string": b.get("state_string", ""),
            "started_at": ts(b.get("started_at")), "complete_at": ts(b.get("complete_at")), "props": props}


@defer.inlineCallbacks
def gather(master, builder_names: list[str]):
    """On the reactor thread: the pollers' heads and the recent builds (with properties) per builder."""
    from buildbot.data import resultspec

    heads = poller_heads(master)
    ids = {b["name"]: b["builderid"] for b in (yield master.data.get(("builders",)))}
    builds = {}
    for name in builder_names:
        if name not in ids:
            continue
        spec = resultspec.ResultSpec(properties=[resultspec.Property(b"property", "eq", BUILD_PROPS)],
                                     order=["-number"], limit=RECENT_BUILDS)
        raw = yield master.data.get_with_resultspec(("builders", ids[name], "builds"), spec)
        builds[name] = [_plain_build(b) for b in raw]
    return heads, builds


@defer.inlineCallbacks
def failed_step_errors(master, builds: list[dict], www: str):
    """buildid -> (the failing step's summary, its log link): the compile step's summary is the first
    compiler error (steps/kernel.py), its ``errors`` log has all of them."""
    out = {}
    for b in builds:
        if not b.get("complete") or b.get("results") not in (2, 4):
            continue
        steps = yield build_steps(master, b["buildid"])
        failed = [s for s in steps if s.get("results") in (2, 4)]
        step = next((s for s in failed if s["name"] == "compile"), failed[0] if failed else None)
        if step is None:
            continue
        logs = yield step_logs(master, step["stepid"])
        slug = next((lg["slug"] for lg in logs if lg["slug"] == "errors"), logs[0]["slug"] if logs else None)
        link = data.build_link(www, b) + (f"/steps/{int(step['number'])}/logs/{slug}" if slug else "")
        out[b["buildid"]] = (step.get("state_string") or "", link)
    return out


class KernelDashboard:
    def __init__(self, images_root: str, state_dir: str, base_url: str, branches: list[dict] | None = None):
        self.images_root, self.state_dir, self.base_url = Path(images_root), Path(state_dir), base_url
        self.branches = list(branches or [])
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), autoescape=True)
        self.buildbot_api = None  # set by buildbot-wsgi-dashboards
        self._index: tuple[tuple, IndexDoc] | None = None  # (index.json's stat key, its parse)

    @property
    def master(self):
        return getattr(self.buildbot_api, "master", None)

    def _machines(self) -> list[dict]:
        farm = named_service(self.master, FARM_SERVICE) if self.master is not None else None
        if farm is None:
            return []
        return blockingCallFromThread(reactor, farm.snapshot)["machines"]

    def _master_data(self, www: str):
        if self.master is None:
            return {}, {}, {}
        names = [b["builder"] for b in self.branches] + [BISECT_BUILDER]
        heads, builds = blockingCallFromThread(reactor, gather, self.master, names)
        heads_builds = []
        for b in self.branches:
            head = data.head_build(builds.get(b["builder"], []), heads.get((b["url"], b["branch"])))
            if head is not None:
                heads_builds.append(head)
        errors = blockingCallFromThread(reactor, failed_step_errors, self.master, heads_builds, www)
        return heads, builds, errors

    def refresh_seconds(self, query: str) -> int:
        value = urllib.parse.parse_qs(query or "").get("refresh", [""])[0]
        if value.isdigit() and REFRESH_RANGE[0] <= int(value) <= REFRESH_RANGE[1]:
            return int(value)
        return REFRESH_SECONDS

    def _read_index(self) -> IndexDoc:
        """index.json, parsed again only when the index writer replaced it: a page is rendered at every
        viewer's refresh, and parsing 10,000 entries takes most of a second."""
        path = self.images_root / "index.json"
        try:
            st = path.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key is not None and self._index is not None and self._index[0] == key:
            return self._index[1]
        try:
            index = read_index(self.images_root)
        except IndexUnreadable:  # no tree yet, or a damaged index: the page shows no images
            return IndexDoc(str(self.images_root), ())
        if key is not None:
            self._index = (key, index)
        return index

    def context(self, www: str, here: str) -> dict:
        """Everything the page shows; ``www`` is the web UI's root and ``here`` this app's, both relative
        to the page, so links work behind a proxy that serves Buildbot under a path."""
        index = self._read_index()
        images = index.entries()
        problem = ""
        try:
            heads, builds, errors = self._master_data(www)
        except Exception as e:  # the files still say a lot: show them, and why the rest is missing
            log.err(e, "Kernels dashboard: reading builds from the master")
            heads, builds, errors, problem = {}, {}, {}, f"builds could not be read from the master: {e}"
        web_urls = {b["url"]: b.get("web_url") for b in self.branches}
        bisects = data.bisect_rows(self.state_dir, {e.get("name"): e for e in images},
                                   builds.get(BISECT_BUILDER, []), web_urls, www, here)
        machines = self._machines()
        now = time.time()
        for m in machines:
            seen = m.get("last_seen") or 0
            m["seen_ago"] = f"{int(now - seen)} s ago" if seen else "never"
        return {
            "branches": data.branch_rows(self.branches, heads, builds, images, errors, www),
            "bisects": bisects, "machines": machines, "images_total": len(images),
            "base_url": self.base_url.rstrip("/"), "generated": index.generated,
            "problem": problem, "refresh": REFRESH_SECONDS,
            "now": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)),
            "duration_svg": Markup(plots.build_duration_svg(data.build_durations(self.branches, builds))),
            "bisect_svg": Markup(plots.bisect_steps_svg(data.bisect_timelines(bisects))),
        }

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "") or "/"
        if path in ("/", "/index.html"):
            # inserted into the web UI's page: links there resolve against the UI's own URL
            body = self.env.get_template("dashboard-frame.html.j2").render(
                src="plugins/wsgi_dashboards/kernels/page.html")
            return self._answer(start_response, "200 OK", "text/html; charset=utf-8", body.encode())
        if path == "/page.html":
            ctx = {**self.context("../../../", ""), "refresh": self.refresh_seconds(environ.get("QUERY_STRING", ""))}
            body = self.env.get_template("dashboard.html.j2").render(**ctx)
            return self._answer(start_response, "200 OK", "text/html; charset=utf-8", body.encode(),
                                [("Content-Security-Policy", PAGE_CSP)])
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "bisects" and parts[2] in SERVED_FILES:
            try:
                f = records.BisectDir(self.state_dir, parts[1]).file(parts[2])
                return self._answer(start_response, "200 OK", f"{SERVED_FILES[parts[2]]}; charset=utf-8",
                                    f.read_bytes())
            except (ValueError, OSError):
                pass
        return self._answer(start_response, "404 Not Found", "text/plain; charset=utf-8", b"not found\n")

    @staticmethod
    def _answer(start_response, status: str, ctype: str, body: bytes, extra=()):
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"), *extra])
        return [body]
