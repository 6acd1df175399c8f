"""The image server as a hostile client on the lab network meets it, over real HTTP on loopback: one
regression test per hole found in review, for the embedded server, for ``farm-step``'s server (the same
site) and for a real master whose image port is flooded while its web UI and worker port must answer."""

from __future__ import annotations

import http.client
import os
import select
import socket
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urljoin, urlsplit

import pytest
from integration.harness import Master, free_port, settings_text, wait_for

from buildbot_kernel.farm.standalone import farm_site
from buildbot_kernel.imagetree.httpguard import HEAD_TIMEOUT, PER_ADDRESS_LIMIT, GuardedSite
from buildbot_kernel.imagetree.server import TreeRoot
from buildbot_kernel.imagetree.testing import ServerProcess, make_image

DEADLINE = 1.5  # the request deadline the test server runs with (seconds)
CAP = 8  # its connections per client address
STALL = 1.0  # how long it lets a download go unread
BIG = 256 << 20  # a sparse file far bigger than what socket buffers hold


def hostile_tree(base):
    """An image tree with every kind of thing a server must not hand out next to what it must."""
    root = base / "images"
    root.mkdir()
    img = make_image(root, "main", 1)
    (base / "secret").mkdir()
    (base / "secret" / "key").write_text("outside the tree")
    os.symlink(base / "secret" / "key", img / "key-link")  # a file outside
    os.symlink(base / "secret", root / "secret-dir")  # a directory outside
    os.symlink(base / "nowhere", img / "broken")  # a broken symlink (made listings crash)
    for hidden in (".incoming/part", ".state", ".cache"):
        (root / hidden).mkdir(parents=True)
    (root / ".incoming" / "part" / "vmlinuz").write_text("half an image")
    (root / ".state" / "farm.json").write_text("machine state")
    (root / ".htpasswd").write_text("admin:$2y$secret")
    (img / ".notes").write_text("dot-file")
    os.symlink(root / ".state" / "farm.json", img / "state-link")  # a way into a hidden directory
    os.mkfifo(img / "fifo")  # opening it would block the reactor
    with open(root / "main" / "big", "wb") as f:
        f.truncate(BIG)
    return root, img


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    root, img = hostile_tree(base)
    s = ServerProcess(root, base / "access.log", "--head-timeout", str(DEADLINE), "--per-address", str(CAP),
                      "--stall-timeout", str(STALL))
    yield s, root, img
    s.stop()


def request(url, path, headers=None, method="GET"):
    """status, headers, body of a request line sent exactly as given (no client-side normalising)."""
    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    c.putheader("Host", u.netloc)
    for k, v in (headers or {}).items():
        c.putheader(k, v)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.headers, body


def assert_clean(log: str):
    """Every refusal so far was an HTTP answer, not an exception in the server."""
    assert "Traceback" not in log and "Unhandled Error" not in log, log[-3000:]


def connect(port, source="127.0.0.1"):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def answered(s) -> bool:
    """The server wrote to or closed this connection (a 408/503, or EOF/reset); False while it waits."""
    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        s.recv(4096, socket.MSG_PEEK)
    except OSError:
        pass
    return True


def read_all(s, timeout):
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_if_none_match_is_not_overridden_by_if_modified_since(server):
    """A cache holding another version got 304 because its If-Modified-Since matched."""
    s, root, img = server
    f = f"/main/{img.name}/config"
    _, h, _ = request(s.url, f, method="HEAD")
    status, _, body = request(s.url, f, {"If-None-Match": '"stale-version"', "If-Modified-Since": h["Last-Modified"]})
    assert status == 200 and body == (img / "config").read_bytes()


@pytest.mark.parametrize("header,status", [
    ("bytes=99999999999999999999999-", 416),
    ("bytes=" + "9" * 4400 + "-", 416),  # was a 500: int() refuses more than 4300 digits
    ("bytes=-" + "9" * 4400, 206),
    ("bytes=0-" + "9" * 4400, 206),
    ("bytes=-0", 416),
    ("bytes=5-3", 200),
])
def test_absurd_range_is_416_or_the_whole_file_never_500(server, header, status):
    s, root, img = server
    got, h, body = request(s.url, f"/main/{img.name}/config", {"Range": header})
    assert got == status
    if status == 416:
        assert h["Content-Range"] == "bytes */64" and body == b""
    else:
        assert body == (img / "config").read_bytes()
    assert_clean(s.log())


def test_listing_never_follows_symlinks_out_of_the_tree(server):
    s, root, img = server
    status, _, body = request(s.url, f"/main/{img.name}/")
    page = body.decode()
    assert status == 200 and 'href="vmlinuz"' in page  # the listing works despite the broken symlink
    for name in ("key-link", "broken", "state-link", "fifo", ".notes"):
        assert f'href="{name}"' not in page, name
    status, _, body = request(s.url, "/")  # no index.html here: the root is listed too
    assert status == 200 and b"secret-dir" not in body and b'href="main/"' in body
    assert_clean(s.log())


@pytest.mark.parametrize("path", ["/main/{img}/key-link", "/secret-dir/key", "/secret-dir/", "/main/{img}/fifo"])
def test_out_of_tree_symlinks_and_special_files_are_404(server, path):
    s, root, img = server
    status, _, body = request(s.url, path.format(img=img.name))
    assert status == 404 and b"outside the tree" not in body


@pytest.mark.parametrize("path", [
    "/.incoming/part/vmlinuz", "/.incoming/", "/.state/farm.json", "/.state/", "/.cache/", "/.htpasswd",
    "/main/{img}/.notes", "/main/{img}/state-link", "/%2eincoming/", "/main/%2e%2e/.state/farm.json",
])
def test_dot_entries_are_never_served(server, path):
    s, root, img = server
    status, _, body = request(s.url, path.format(img=img.name))
    assert status == 404
    assert b"half an image" not in body and b"machine state" not in body and b"secret" not in body


def test_dot_entries_are_never_listed(server):
    s, root, img = server
    _, _, body = request(s.url, "/")
    assert b'href=".' not in body and b".state" not in body and b".incoming" not in body


@pytest.mark.parametrize("path", ["//main", "///main", "//main/", "/\\main", "/%2F%2Fmain", "/%5Cmain",
                                  "//evil.example", "/%2fevil.example", "//main/%2e%2e"])
def test_double_slash_never_redirects_off_host(server, path):
    s, root, img = server
    status, headers, _ = request(s.url, path)
    assert status in (200, 301, 302, 404), path  # "//main/" is the listing: its links are relative
    location = headers.get("Location")
    if location is not None:
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
        assert urlsplit(urljoin(s.url, location)).netloc == urlsplit(s.url).netloc
    assert_clean(s.log())


@pytest.mark.parametrize("path", ["/../secret/key", "/main/../../secret/key", "/%2e%2e/secret/key",
                                  "/..%2fsecret%2fkey", "/main/%2f..%2f..%2fsecret%2fkey", "/%2fetc%2fpasswd"])
def test_traversal_stays_refused(server, path):
    s, root, img = server
    status, _, body = request(s.url, path)
    assert status == 404 and b"outside the tree" not in body


def test_a_trickled_request_head_is_cut_at_the_deadline(server):
    """Twisted's idle timeout restarts on every byte: one header byte now and then held a descriptor for
    ever.  The deadline counts from the connection, whatever arrives."""
    s, root, img = server
    port = urlsplit(s.url).port
    c = connect(port)
    opened = time.monotonic()
    head = b"GET /main/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    sent = 0
    while not answered(c) and time.monotonic() - opened < DEADLINE + 10:
        if sent < len(head):
            c.sendall(head[sent:sent + 1])
            sent += 1
        select.select([c], [], [], 0.1)
    took = time.monotonic() - opened
    reply = read_all(c, 5)
    c.close()
    assert reply.startswith(b"HTTP/1.1 408 ") and DEADLINE - 0.2 < took < DEADLINE + 3, (reply, took)
    assert_clean(s.log())


def test_an_idle_kept_alive_connection_is_closed(server):
    s, root, img = server
    c = connect(urlsplit(s.url).port)
    c.sendall(f"GET /main/{img.name}/config HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    done = time.monotonic()
    reply = read_all(c, DEADLINE + 5)  # the response, then EOF when the server closes the idle connection
    c.close()
    assert reply.startswith(b"HTTP/1.1 200 ") and b"408" not in reply
    assert time.monotonic() - done < DEADLINE + 4


def test_connections_per_address_are_capped(server):
    s, root, img = server
    port = urlsplit(s.url).port
    held = [connect(port) for _ in range(CAP)]
    for c in held:
        c.sendall(b"GET / HTTP/1.1\r\n")  # half a head, then nothing
    try:
        one_more = connect(port)
        reply = read_all(one_more, 5)
        one_more.close()
        assert reply.startswith(b"HTTP/1.1 503 "), reply
        assert not any(answered(c) for c in held)  # the first CAP are still served
        held.pop().close()

        def download():
            try:
                with urllib.request.urlopen(f"{s.url}main/{img.name}/config", timeout=5) as r:
                    return r.status == 200
            except urllib.error.HTTPError as e:
                return e.code == 200
            except OSError:  # 503 or reset while the close is not seen yet
                return False
        wait_for(download, 10, "a download once one connection of the address closed")
    finally:
        for c in held:
            c.close()
    assert "refused a connection from 127.0.0.1 (503)" in s.log()
    assert_clean(s.log())


def test_a_client_that_stops_reading_is_cut_off(server):
    """A download nobody reads held its socket and its open file for ever."""
    s, root, img = server
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.settimeout(10)
    c.connect(("127.0.0.1", urlsplit(s.url).port))
    c.sendall(b"GET /main/big HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: "cut off a download to 127.0.0.1" in s.log(), STALL + 15, "the stalled download to be cut")
    got = read_all(c, 10)  # what the buffers held, then the reset
    c.close()
    assert got.startswith(b"HTTP/1.1 200 ") and len(got) < BIG
    assert_clean(s.log())


@pytest.mark.parametrize("raw", [
    b"OPTIONS /main/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /main/latest HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /%ff%fe/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://evil.example/main/latest HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /main/latest HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Mon, 30 Nov 99999999999 06:14:09 GMT\r\n\r\n",
    b"GET /main/latest HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"\r\n\r\n",
    b"GET /main/latest HTTP/1.1\r\nHost: x\r\nRange: bytes=--\r\n\r\n",
    b"GET /main/latest HTTP/1.1\r\nHost: x\r\nIf-Range: \xff\r\nRange: bytes=0-1\r\n\r\n",
    b"GET /" + b"a/" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"BREW /pot HTCPCP/1.0\r\n\r\n",
])
def test_every_refusal_is_a_clean_http_answer(server, raw):
    s, root, img = server
    c = connect(urlsplit(s.url).port)
    c.sendall(raw.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
    reply = read_all(c, DEADLINE + 5)
    c.close()
    assert reply.startswith(b"HTTP/1.1 ") and not reply.startswith(b"HTTP/1.1 5"), reply[:200]
    assert_clean(s.log())


# farm-step's server: the same site, so the same refusals and limits


def test_farm_step_builds_the_image_servers_site(tmp_path):
    from twisted.web import resource

    machines = resource.Resource()
    site = farm_site(tmp_path, machines)
    assert isinstance(site, GuardedSite) and isinstance(site.resource, TreeRoot)
    assert site.resource.children[b"machines"] is machines
    assert site.head_timeout == HEAD_TIMEOUT and site.per_address == PER_ADDRESS_LIMIT


FARM_SITE = """
import sys
from twisted.internet import reactor
from twisted.web import static
from buildbot_kernel.farm.standalone import farm_site
site = farm_site(sys.argv[1], static.Data(b"machines\\n", "text/plain"))
port = reactor.listenTCP(0, site, interface="127.0.0.1")
print(f"at http://127.0.0.1:{port.getHost().port}/", flush=True)
reactor.run()
"""


def test_farm_step_server_refuses_what_the_image_server_refuses(tmp_path):
    root, img = hostile_tree(tmp_path)
    s = ServerProcess(root, tmp_path / "access.log", argv=[sys.executable, "-c", FARM_SITE, str(root)])
    try:
        assert request(s.url, f"/main/{img.name}/vmlinuz")[0] == 200
        assert request(s.url, "/machines")[2] == b"machines\n"  # the mounted farm resource
        for path in ("/.state/farm.json", f"/main/{img.name}/.notes", f"/main/{img.name}/key-link",
                     "/secret-dir/key", "/.incoming/part/vmlinuz", "/%2e%2e/secret/key"):
            assert request(s.url, path)[0] == 404, path
        status, h, _ = request(s.url, f"/main/{img.name}/config", {"Range": "bytes=" + "9" * 4400 + "-"})
        assert status == 416 and h["Content-Range"] == "bytes */64"
        status, h, _ = request(s.url, "//main")
        assert h["Location"] == "/main/"
        _, _, body = request(s.url, f"/main/{img.name}/")
        assert b"key-link" not in body and b".notes" not in body
        assert_clean(s.log())
    finally:
        s.stop()


# a real master: flooding the image port must not take the web UI or the worker port with it


def _second_loopback_address() -> str | None:
    """127.0.0.2 as a *source* address (the master still listens on 127.0.0.1 only): Linux routes all of
    127.0.0.0/8 to the loopback interface, so the flood counts against another address than the test's
    own requests.  None where that is not so."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return None


@pytest.mark.integration
def test_flooded_image_port_leaves_web_ui_and_worker_port_answering(tmp_path):
    flood_from = _second_loopback_address()
    if flood_from is None:
        pytest.skip("127.0.0.2 cannot be a source address here (not Linux loopback)")
    dead = f"http://127.0.0.1:{free_port()}/kernel.git"  # no builds: the test is about the listeners
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    master = Master(tmp_path, settings_text(dead, ["main"], ports, poll=300))
    master.start(ports["web"])
    flood = []
    try:
        wait_for(lambda: (master.dir / "images" / "index.json").exists(), 30, "the image index")
        for _ in range(500):  # slow clients: half a request head each, then silence
            c = connect(ports["image"], source=flood_from)
            c.sendall(b"GET /index.json HTTP/1.1\r\nHost: x\r\n")
            flood.append(c)
        # the ones over the per-address cap are answered 503 and closed at once
        wait_for(lambda: sum(not answered(c) for c in flood) == PER_ADDRESS_LIMIT, 10,
                 f"all but {PER_ADDRESS_LIMIT} flood connections to be refused")

        started = time.monotonic()
        assert master.get("builders")["builders"]
        assert time.monotonic() - started < 2, "the web UI is slow while the image port is flooded"
        with socket.create_connection(("127.0.0.1", ports["worker"]), timeout=2) as w:
            assert w.recv(64), "the worker port does not answer"  # Buildbot's PB greets first
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['image']}/index.json", timeout=5) as r:
            assert r.status == 200 and b'"images"' in r.read()

        # the held ones are cut at the request deadline
        wait_for(lambda: all(answered(c) for c in flood), HEAD_TIMEOUT + 10, "the slow heads to be cut off")
        replies = {read_all(c, 5)[:12] for c in flood[-10:]}
        log = master.log_tail(200_000)
        assert f"refused a connection from {flood_from} (503)" in log
        assert f"closed a connection from {flood_from} that did not send a whole request" in log
        # no error from the image server (the poller's own traceback about the unreachable repository is
        # Buildbot's, not ours)
        assert "Unhandled Error" not in log and "buildbot_kernel/imagetree" not in log
        assert replies <= {b"HTTP/1.1 503", b"HTTP/1.1 408", b""}, replies
    finally:
        for c in flood:
            c.close()
        master.stop()
