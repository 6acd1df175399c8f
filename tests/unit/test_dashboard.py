"""The Kernels dashboard's rows and page, from the files the bisect and the image tree really write."""

from __future__ import annotations

import json
import os

from buildbot_kernel.bisect import records, report
from buildbot_kernel.commitlink import RevLinks, commit_url
from buildbot_kernel.master import dashboard_data as data
from buildbot_kernel.master.dashboard import KernelDashboard

WEB = "https://git.example.org/linux/-/commit/{sha}"
URL = "https://git.example.org/linux.git"
GOOD, BAD, CULPRIT, MID = "a" * 40, "b" * 40, "c" * 40, "d" * 40
HOSTILE = '<script>window.pwned=1</script> drm: "quote" & <b>bold</b>'
BRANCHES = [{"repository": "drm-intel", "url": URL, "branch": "drm-tip", "builder": "drm-tip", "web_url": WEB},
            {"repository": "drm-intel", "url": URL, "branch": "broken<i>", "builder": "broken", "web_url": WEB}]


def write_bisect(state, ident="20260101-000000-bs1", status=report.DONE):
    d = records.BisectDir(state, ident)
    request = {"target": "drm-tip", "repository": "drm-intel", "url": URL, "branch": "drm-tip", "good": [GOOD],
               "bad": BAD, "tester": "local", "command": "true", "mode": "test", "build_missing": True,
               "build_config": "x86_64", "max_steps": 0}
    d.create(request)
    steps = [{"n": 1, "sha": MID, "image": "img-mid", "verdict": "good", "started": "2026-01-01T00:00:10Z",
              "seconds": 20.0, "build": None},
             {"n": 2, "sha": CULPRIT, "image": "img-c", "verdict": "bad", "started": "2026-01-01T00:00:40Z",
              "seconds": 30.0, "build": {"sha": CULPRIT, "results": 0, "seconds": 12.0}}]
    for s in steps:
        d.append_step(s)
    (d.path / records.LOG).write_text(f"git bisect start\n# first bad commit: [{CULPRIT}]\n")
    first_bad = {"sha": CULPRIT, "subject": HOSTILE, "author": "Dev", "date": "2026-01-01",
                 "image": "img-c", "image_url": "http://img.example.org/drm-tip/img-c/"}
    doc = report.result_document(ident, request, status, steps, first_bad=first_bad if status == report.DONE else None,
                                 candidates=None if status == report.DONE else [CULPRIT, MID], reason="skips",
                                 last_good={"sha": MID, "subject": "mid", "image": "img-mid",
                                            "image_url": "javascript:alert(1)"},
                                 started=1767225600.0, finished=1767225700.0)
    d.write_result(doc)
    return d


def test_commit_links_only_for_hex_shas():
    assert commit_url(WEB, CULPRIT) == f"https://git.example.org/linux/-/commit/{CULPRIT}"
    assert commit_url(WEB, "v6.1") is None and commit_url(WEB, "a{sha}") is None and commit_url("", CULPRIT) is None
    assert RevLinks({URL: WEB})(CULPRIT, URL).endswith(CULPRIT) and RevLinks({URL: ""})(CULPRIT, URL) is None
    other = RevLinks({URL: WEB}, fallback=lambda rev, repo: f"fallback {rev} {repo}")
    assert other(CULPRIT, "git://elsewhere") == f"fallback {CULPRIT} git://elsewhere"
    assert other("v6.1", URL) is None  # a configured repository never falls back


def test_bisect_row_reads_what_result_json_holds(tmp_path):
    write_bisect(tmp_path)
    row, = data.bisect_rows(tmp_path, {"img-mid": {"url": "http://img.example.org/drm-tip/img-mid/"}},
                            [{"number": 3, "builderid": 7, "props": {"bisect_id": "20260101-000000-bs1"}}],
                            {URL: WEB}, "../../../", "")
    assert [g["text"] for g in row["good"]] == [GOOD[:12]] and row["bad"]["text"] == BAD[:12]
    assert row["bad"]["url"] == commit_url(WEB, BAD)
    assert row["status"] == "done" and row["culprit"]["sha"] == CULPRIT and row["culprit"]["subject"] == HOSTILE
    assert row["build_url"] == "../../../#/builders/7/builds/3"
    assert row["result_url"] == "bisects/20260101-000000-bs1/result.json"
    assert [i["url"] for i in row["images"]] == ["http://img.example.org/drm-tip/img-c/"]  # javascript: dropped
    assert row["tests"] == 2 and row["builds"] == 1
    assert row["steps"][0]["image_url"] == "http://img.example.org/drm-tip/img-mid/"
    assert data.bisect_timelines([row])[0][1] == [(0.0, 0), (0.5, 1), (1.17, 2)]


def test_unresolved_bisect_lists_its_candidates(tmp_path):
    write_bisect(tmp_path, status=report.UNRESOLVED)
    row, = data.bisect_rows(tmp_path, {}, [], {URL: WEB}, "", "")
    assert row["culprit"] is None and row["candidates_total"] == 2 and row["reason"] == "skips"


def test_failing_head_without_image_is_listed_with_its_error():
    builds = {"drm-tip": [{"buildid": 1, "builderid": 2, "number": 1, "results": 0, "complete": True,
                           "props": {"commit_sha": GOOD, "commit_subject": "old"}},
                          {"buildid": 5, "builderid": 2, "number": 4, "results": 0, "complete": True,
                           "props": {"commit_sha": BAD, "bisect_id": "x"}}],
              "broken": [{"buildid": 9, "builderid": 3, "number": 2, "results": 2, "complete": True,
                          "props": {"commit_sha": BAD, "commit_subject": HOSTILE}}]}
    images = [{"name": "img-a", "branch": "drm-tip", "sha": GOOD, "url": "http://i/drm-tip/img-a/",
               "files": {"build.log.xz": {}}, "tests": {"boot": {"result": "pass", "log_url": "javascript:x"}}}]
    heads = {(URL, "drm-tip"): GOOD}  # broken<i>: not polled yet, the newest own build names the head
    rows = data.branch_rows(BRANCHES, heads, builds, images, {9: ("failed: a.c:1: error: x", "L")}, "")
    tip, broken = rows
    assert tip["state"] == "success" and tip["build_url"] == "#/builders/2/builds/1"  # not the bisect's build
    assert tip["image"]["build_log"] == "http://i/drm-tip/img-a/build.log.xz" and tip["image_is_head"]
    assert tip["image"]["tests"][0]["result"] == "pass" and tip["image"]["tests"][0]["log_url"] is None
    assert broken["head"] == BAD and broken["state"] == "failure" and broken["image"] is None
    assert broken["error"] == "failed: a.c:1: error: x" and broken["subject"] == HOSTILE


def test_page_escapes_hostile_text_and_runs_no_script(tmp_path):
    state, root = tmp_path / "state", tmp_path / "images"
    root.mkdir()
    write_bisect(state)
    (root / "index.json").write_text(json.dumps({"images": [
        {"name": "img-a", "branch": "broken<i>", "sha": BAD, "subject": HOSTILE, "url": "http://i/x/img-a/"}]}))
    app = KernelDashboard(str(root), str(state), "http://i", branches=BRANCHES)
    status, headers, body = call(app, "/page.html")
    assert status == "200 OK" and "script-src" not in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<script" not in body.lower() and "<b>bold" not in body and "broken<i>" not in body
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in body and "broken&lt;i&gt;" in body
    assert '<meta http-equiv="refresh"' in body and "<svg" in body and "javascript:" not in body
    assert f'href="{commit_url(WEB, CULPRIT)}"' in body
    status, headers, body = call(app, "/bisects/20260101-000000-bs1/result.json")
    assert status == "200 OK" and json.loads(body)["first_bad"]["sha"] == CULPRIT
    for bad in ("/bisects/../result.json", "/bisects/x/request.json", "/bisects/.x/result.json", "/nope"):
        assert call(app, bad)[0] == "404 Not Found", bad
    assert app.refresh_seconds("refresh=5") == 5
    assert app.refresh_seconds("refresh=1") == app.refresh_seconds("refresh=x") == app.refresh_seconds("") == 30
    status, _, body = call(app, "/index.html")
    assert "<iframe" in body and 'src="plugins/wsgi_dashboards/kernels/page.html"' in body


def call(app, path):
    got = {}

    def start_response(status, headers):
        got["status"], got["headers"] = status, dict(headers)
    body = b"".join(app({"PATH_INFO": path}, start_response)).decode()
    return got["status"], got["headers"], body


def test_empty_master_renders_every_branch_and_empty_charts(tmp_path):
    app = KernelDashboard(str(tmp_path / "images"), str(tmp_path / "state"), "http://i", branches=BRANCHES)
    status, _, body = call(app, "/page.html")
    assert status == "200 OK" and body.count('class="branch"') == 2 and "not polled yet" in body
    assert body.count("no data yet") == 2 and "No bisect has run yet" in body


def test_running_bisect_is_listed_from_its_steps(tmp_path):
    d = write_bisect(tmp_path, ident="20260102-000000-bs2")
    d.file(records.RESULT).unlink()
    write_bisect(tmp_path, ident="20260101-000000-bs1")
    running, done = data.bisect_rows(tmp_path, {}, [], {URL: WEB}, "", "")
    assert running["id"] == "20260102-000000-bs2" and running["status"] == "running"
    assert running["culprit"] is None and running["result_url"] is None and len(running["steps"]) == 2
    assert running["tests"] == 2 and running["started"] == "2026-01-01T00:00:10Z"
    assert done["status"] == "done"


def test_machines_table_shows_the_qemu_accelerator_and_who_holds_a_machine(tmp_path):
    from buildbot_kernel.farm.registry import Registry

    reg = Registry(["vm1", "lab1"])
    reg.note_accel("vm1", "kvm")
    reg.set_owner("lab1", "bisect 20260101-000000-bs1")

    class WithFarm(KernelDashboard):  # the farm service's snapshot, from a real registry
        def _machines(self):
            return reg.snapshot()["machines"]

    app = WithFarm(str(tmp_path / "images"), str(tmp_path / "state"), "http://i", branches=BRANCHES)
    body = call(app, "/page.html")[2]
    assert '<td>vm1 <span class="muted accel">(QEMU kvm)</span></td>' in body
    assert "<td>lab1</td>" in body and "<td>bisect 20260101-000000-bs1</td>" in body
    reg.release("lab1")
    assert "bisect 20260101-000000-bs1" not in call(app, "/page.html")[2]


def test_the_index_is_parsed_again_only_when_the_writer_replaced_it(tmp_path):
    root = tmp_path / "images"
    root.mkdir()

    def publish(names):  # as the index writer does: a new file renamed over the old one
        tmp = root / "index.json.tmp"
        tmp.write_text(json.dumps({"schema": 1, "images": [{"name": n, "branch": "b", "sha": BAD, "build": "x86_64",
                                               "url": f"http://i/b/{n}/",
                                               "files": {"vmlinuz": {"size": 1, "sha256": "ab" * 32}}}
                                              for n in names]}))
        os.replace(tmp, root / "index.json")

    publish(["img-a"])
    app = KernelDashboard(str(root), str(tmp_path / "state"), "http://i", branches=BRANCHES)
    first = app._read_index()
    assert [r.name for r in first.images] == ["img-a"] and app._read_index() is first  # unchanged: not parsed
    publish(["img-a", "img-b"])
    assert [r.name for r in app._read_index().images] == ["img-a", "img-b"]
