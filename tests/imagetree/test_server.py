"""The embedded image server over real HTTP: downloads, Range/resume, HEAD, conditional GET, 404s,
traversal attempts, the sha endpoint and the access log."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from buildbot_kernel.imagetree.index import TreeIndex
from buildbot_kernel.imagetree.testing import image_fields, make_image

BIG = 3 * (1 << 20) + 12345  # several producer chunks, not a multiple of the chunk size


@pytest.fixture(scope="module")
def site(tmp_path_factory, serve):
    tmp_path = tmp_path_factory.mktemp("site")
    root = tmp_path / "images"
    root.mkdir()
    img = make_image(root, "drm-intel-next", 1, sizes={"vmlinuz": BIG})
    make_image(root, "drm-intel-next", 2)
    (tmp_path / "secret.txt").write_text("outside the tree")
    os.symlink(tmp_path / "secret.txt", img / "escape")
    os.symlink(tmp_path, root / "escape-dir")
    (root / ".incoming" / "half").mkdir(parents=True)
    (root / ".incoming" / "half" / "vmlinuz").write_text("half")
    (img / ".hidden").write_text("dot-file")
    os.symlink(root / ".incoming" / "half" / "vmlinuz", img / "via-incoming")
    os.symlink(tmp_path / "nowhere", img / "broken")
    os.symlink(img / "config", img / "config-link")  # inside the tree: listed and served
    url = serve(root)
    TreeIndex(root, url).regenerate()
    return url, root, img


def get(url, headers=None, method="GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def raw_request(base, path, headers=None):
    """A request line exactly as given (urllib would normalise ``..``): status, headers, body."""
    u = urlsplit(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    c.putheader("Host", u.netloc)
    for k, v in (headers or {}).items():
        c.putheader(k, v)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.headers, body


def raw_get(base, path):
    status, _, body = raw_request(base, path)
    return status, body


def meta(img):
    return json.loads((img / "metadata.json").read_text())


def test_full_download_matches_metadata(site):
    url, root, img = site
    status, headers, body = get(f"{url}drm-intel-next/{img.name}/vmlinuz")
    assert status == 200
    assert int(headers["Content-Length"]) == BIG == len(body)
    assert hashlib.sha256(body).hexdigest() == meta(img)["files"]["vmlinuz"]["sha256"]
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Accept-Ranges"] == "bytes" and headers["ETag"] and headers["Last-Modified"]


def test_range_resume_reassembles_the_file(site):
    url, root, img = site
    f = f"{url}drm-intel-next/{img.name}/vmlinuz"
    cut = 1_000_003
    status, h1, first = get(f, {"Range": f"bytes=0-{cut - 1}"})
    assert status == 206 and len(first) == cut
    assert h1["Content-Range"] == f"bytes 0-{cut - 1}/{BIG}"
    status, h2, rest = get(f, {"Range": f"bytes={cut}-", "If-Range": h1["ETag"]})
    assert status == 206 and h2["Content-Range"] == f"bytes {cut}-{BIG - 1}/{BIG}"
    assert hashlib.sha256(first + rest).hexdigest() == meta(img)["files"]["vmlinuz"]["sha256"]
    status, _, tail = get(f, {"Range": "bytes=-10"})
    assert status == 206 and tail == (img / "vmlinuz").read_bytes()[-10:]
    status, h, _ = get(f, {"Range": f"bytes={BIG}-"})
    assert status == 416 and h["Content-Range"] == f"bytes */{BIG}"
    status, _, whole = get(f, {"Range": "bytes=0-1", "If-Range": '"other-version"'})
    assert status == 200 and len(whole) == BIG


def test_head_and_conditional_get(site):
    url, root, img = site
    f = f"{url}drm-intel-next/{img.name}/vmlinuz"
    status, h, body = get(f, method="HEAD")
    assert status == 200 and body == b"" and int(h["Content-Length"]) == BIG
    status, _, body = get(f, {"If-None-Match": h["ETag"]})
    assert status == 304 and body == b""
    status, _, _ = get(f, {"If-Modified-Since": h["Last-Modified"]})
    assert status == 304


def test_types_index_and_listing(site):
    url, root, img = site
    status, h, body = get(f"{url}index.json")
    assert status == 200 and h["Content-Type"] == "application/json"
    assert len(json.loads(body)["images"]) == 2
    status, h, body = get(url)
    assert status == 200 and h["Content-Type"].startswith("text/html") and b"Kernel images" in body
    status, _, body = get(f"{url}drm-intel-next/latest")
    assert body.decode().strip() == image_fields("drm-intel-next", 2)["name"]
    status, h, body = get(f"{url}drm-intel-next/{img.name}/")
    assert status == 200 and b"vmlinuz" in body and b"metadata.json" in body
    status, h, body = get(f"{url}drm-intel-next/{img.name}/config")
    assert h["Content-Type"].startswith("text/plain")


def test_if_none_match_decides_alone(site):
    """RFC 9110 13.2.2: with If-None-Match present, If-Modified-Since is not looked at."""
    url, root, img = site
    f = f"{url}drm-intel-next/{img.name}/config"
    _, h, _ = get(f, method="HEAD")
    epoch = "Thu, 01 Jan 1970 00:00:00 GMT"
    status, _, body = get(f, {"If-None-Match": '"another-version"', "If-Modified-Since": h["Last-Modified"]})
    assert status == 200 and body == (img / "config").read_bytes()
    assert get(f, {"If-None-Match": h["ETag"], "If-Modified-Since": epoch})[0] == 304
    assert get(f, {"If-None-Match": f'"x", W/{h["ETag"]}'})[0] == 304  # a list, weak comparison
    assert get(f, {"If-None-Match": "*"})[0] == 304
    assert get(f, {"If-Modified-Since": epoch})[0] == 200
    assert get(f, {"If-Modified-Since": "not a date"})[0] == 200


@pytest.mark.parametrize("header,status,content_range", [
    ("bytes=99999999999999999999999-", 416, "bytes */64"),
    ("bytes=" + "9" * 5000 + "-", 416, "bytes */64"),  # more digits than int() takes
    ("bytes=-0", 416, "bytes */64"),
    ("bytes=64-", 416, "bytes */64"),
    ("bytes=5-3", 200, None),  # invalid: ignored, whole file
    ("bytes=-" + "9" * 5000, 206, "bytes 0-63/64"),  # huge suffix: all of it
    ("bytes=0-" + "9" * 5000, 206, "bytes 0-63/64"),
    ("bytes=" + "0" * 5000 + "5-9", 206, "bytes 5-9/64"),
    ("Bytes=0-0", 206, "bytes 0-0/64"),
    ("bytes=abc", 200, None),
    ("bytes=0-1,3-4", 200, None),
])
def test_range_numbers_of_any_size(site, header, status, content_range):
    url, root, img = site
    got, h, body = get(f"{url}drm-intel-next/{img.name}/config", {"Range": header})
    assert got == status
    assert h.get("Content-Range") == content_range
    if status == 200:
        assert body == (img / "config").read_bytes()


def test_listing_shows_only_what_may_be_served(site):
    url, root, img = site
    status, _, body = get(f"{url}drm-intel-next/{img.name}/")
    page = body.decode()
    assert status == 200 and 'href="config-link"' in page and 'href="vmlinuz"' in page
    for hidden in ("escape", ".hidden", "via-incoming", "broken", ".incoming"):
        assert f'href="{hidden}' not in page, hidden
    assert get(f"{url}drm-intel-next/{img.name}/config-link")[0] == 200
    assert get(f"{url}drm-intel-next/{img.name}/via-incoming")[0] == 404
    assert get(f"{url}drm-intel-next/{img.name}/.hidden")[0] == 404


def test_directory_without_slash_redirects(site):
    url, root, img = site
    status, headers, _ = raw_request(url, f"/drm-intel-next/{img.name}")
    assert status in (301, 302) and headers["Location"] == f"/drm-intel-next/{img.name}/"
    status, headers, _ = raw_request(url, "//drm-intel-next")
    assert status in (301, 302) and headers["Location"] == "/drm-intel-next/"


def test_missing_is_404(site):
    url, root, img = site
    assert get(f"{url}drm-intel-next/nope/vmlinuz")[0] == 404
    assert get(f"{url}nope")[0] == 404


@pytest.mark.parametrize("path", [
    "/../secret.txt",
    "/drm-intel-next/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/%2e%2e/etc/passwd",
    "/..%2fsecret.txt",
    "/drm-intel-next/%2f..%2f..%2fsecret.txt",
    "/%2fetc%2fpasswd",
    "//etc/passwd",
    "/.incoming/half/vmlinuz",
    "/.trash/",
    "/escape-dir/secret.txt",
    "/drm-intel-next/{img}/escape",
    "/drm-intel-next/{img}/%00",
])
def test_traversal_refused(site, path):
    url, root, img = site
    status, body = raw_get(url, path.format(img=img.name))
    assert status == 404, path
    assert b"outside the tree" not in body and b"root:" not in body and b"half" not in body


def test_sha_endpoint(site):
    url, root, img = site
    sha = meta(img)["sha"]
    status, _, body = get(f"{url}sha/{sha[:10]}")
    doc = json.loads(body)
    assert status == 200 and doc["sha"] == sha
    assert doc["images"][0]["url"] == f"{url}drm-intel-next/{img.name}/"
    status, _, body = get(f"{url}sha/{sha}?branch=other")
    assert status == 404 and "none with branch=other" in json.loads(body)["error"]
    assert get(f"{url}sha/0000000")[0] == 404
    assert get(f"{url}sha/xyz")[0] == 400


def test_sha_endpoint_ambiguous_prefix(tmp_path, serve):  # a second server, own tree
    root = tmp_path / "t"
    root.mkdir()
    make_image(root, "b", 1, sha="abcd" + "1" * 36)
    make_image(root, "b", 2, sha="abcd" + "2" * 36)
    url = serve(root)
    TreeIndex(root, url).regenerate()
    status, _, body = get(f"{url}sha/abcd")
    doc = json.loads(body)
    assert status == 409
    assert [m["sha"] for m in doc["matches"]] == ["abcd" + "1" * 36, "abcd" + "2" * 36]
    assert get(f"{url}sha/abcd2")[0] == 200
    (root / "index.json").write_text("{ half an index")
    status, _, body = get(f"{url}sha/abcd2")
    assert status == 503 and "cannot be read" in json.loads(body)["error"]
    make_image(root, "b", 3, sha="abcd" + "3" * 36)
    TreeIndex(root, url).regenerate()  # the index is re-read as it changes
    status, _, body = get(f"{url}sha/abcd3")
    assert status == 200 and json.loads(body)["sha"] == "abcd" + "3" * 36


def test_access_log(site):
    url, root, img = site
    get(f"{url}drm-intel-next/latest")
    log = root.parent / "access.log"
    # the server flushes its log buffer on a timer; poll with a deadline
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if log.exists() and "GET /drm-intel-next/latest" in log.read_text():
            break
        time.sleep(0.05)
    assert "GET /drm-intel-next/latest HTTP/1.1\" 200" in log.read_text()


def test_kept_alive_connection_mixes_sent_files_and_other_answers(site):
    """File bodies go out from the sendfile thread, everything else from the reactor: on one connection
    they must follow each other whole and in order, and the access log counts every byte sent."""
    url, root, img = site
    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    expected = hashlib.sha256((img / "vmlinuz").read_bytes()).hexdigest()
    for path in ("/drm-intel-next/", f"/drm-intel-next/{img.name}/vmlinuz", "/drm-intel-next/",
                 f"/drm-intel-next/{img.name}/vmlinuz", f"/drm-intel-next/{img.name}/config"):
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and len(body) == int(r.headers["Content-Length"]), path
        if path.endswith("vmlinuz"):
            assert hashlib.sha256(body).hexdigest() == expected
    c.close()
    assert "image server: sending file downloads with sendfile(2)" in (root.parent / "server.out").read_text()
    log = root.parent / "access.log"
    line = f'GET /drm-intel-next/{img.name}/vmlinuz HTTP/1.1" 200 {BIG} '
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and log.read_text().count(line) < 2:
        time.sleep(0.05)
    assert log.read_text().count(line) >= 2, log.read_text()[-2000:]
