"""The embedded image server: the image tree over HTTP from the master process (Twisted web).

``make_site(root)`` returns a ``Site`` whose root resource serves the tree and takes mounted children:
``/sha/<prefix>`` (commit lookup, mounted here) and ``/machines`` (the test-farm driver mounts it).
Files are sent by a thread with sendfile(2) (imagetree/sendfile.py: the reactor, shared with the web UI,
only parses the request), or else stream through a push producer (never read whole), with single-range
requests, conditional GET (ETag, Last-Modified) and HEAD.  Anything that would leave the root (``..``,
``%2e%2e``, encoded slashes, symlinks pointing outside) or names a hidden entry is a plain 404, so a
probe learns nothing about what exists outside; a listing never names such an entry either.  Slow and
numerous clients are bounded by the Site (imagetree/httpguard.py), so they cannot starve the master.
``buildbot-kernel farm-step`` serves through the same ``make_site``.
"""

from __future__ import annotations

import html
import json
import os
import stat
from urllib.parse import quote

from twisted.internet import defer, tcp, threads
from twisted.python import failure, log
from twisted.web import http, resource, server

from buildbot_kernel.imagetree.httpfiles import (
    Refused,
    canonical_location,
    content_type,
    list_dir,
    not_modified,
    parse_range,
    resolve,
)
from buildbot_kernel.imagetree.httpguard import HEAD_TIMEOUT, PER_ADDRESS_LIMIT, STALL_TIMEOUT, GuardedSite
from buildbot_kernel.imagetree.indexfile import read_index
from buildbot_kernel.imagetree.lookup import Ambiguous, BadPrefix, NotFound, ShaLookup
from buildbot_kernel.imagetree.sendfile import Sender

CHUNK = 1 << 18  # 256 KiB per read: few reactor turns per file, little memory per client


def _not_found(request) -> bytes:
    request.setResponseCode(http.NOT_FOUND)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"404 not found\n"


class FileProducer:
    """Push producer: writes chunks until the transport says its buffer is full (``pauseProducing``)
    and carries on when the transport drained it (``resumeProducing``, called from the transport's
    own write event), so a download costs one read and one send per chunk and no timer turns.

    A client that reads nothing for the site's ``stall_timeout`` seconds is cut off: it would otherwise
    hold a socket and an open file for as long as it likes."""

    def __init__(self, request, f, offset: int, length: int):
        self.request = request
        self.f = f
        self.offset = offset
        self.left = length
        self.paused = False
        self._stall = None
        request.notifyFinish().addBoth(self._close)

    def start(self) -> None:
        transport = getattr(self.request.channel, "transport", None)
        if transport is not None and getattr(transport, "SEND_LIMIT", CHUNK) < CHUNK:
            transport.SEND_LIMIT = CHUNK  # one send(2) per chunk instead of several
        self.request.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True
        site = getattr(self.request, "site", None)
        timeout = getattr(site, "stall_timeout", None)
        if self._stall is None and self.f is not None and timeout:
            self._stall = site.reactor.callLater(timeout, self._stalled, site, timeout)

    def resumeProducing(self) -> None:
        self.paused = False
        self._cancel_stall()
        while not self.paused and self.f is not None:
            data = os.pread(self.f.fileno(), min(CHUNK, self.left), self.offset) if self.left else b""
            if not data:  # done (or the file shrank under us: end what we can)
                self._close()
                self.request.unregisterProducer()
                self.request.finish()
                return
            self.offset += len(data)
            self.left -= len(data)
            self.request.write(data)  # may call pauseProducing before it returns

    def stopProducing(self) -> None:
        self._close()

    def _stalled(self, site, timeout: float) -> None:
        self._stall = None
        site.throttled.warning("stall", f"cut off a download to {self.request.getClientAddress().host} that took "
                                     f"nothing for {timeout:g} s")
        self._close()
        transport = getattr(self.request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _cancel_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None

    def _close(self, _=None) -> None:
        # also the notifyFinish callback: a client that went away is not an error worth logging
        self._cancel_stall()
        if self.f is not None:
            self.f.close()
            self.f = None


def _head_bytes(request) -> bytes | None:
    """The status line and headers Twisted would write for ``request``, or None if a header holds a line
    break (Twisted's own writer refuses those; this module never sets one)."""
    lines = [b"%s %d %s" % (request.clientproto, request.code, request.code_message)]
    lines += [name + b": " + value for name, values in request.responseHeaders.getAllRawHeaders()
              for value in values]
    if any(b"\r" in line or b"\n" in line for line in lines):
        return None
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _send_in_thread(request, f, offset: int, length: int) -> bool:
    """Hand the response to the site's sendfile thread (imagetree/sendfile.py) when the connection is a
    plain TCP socket with nothing buffered (so this response is its only writer); False to send it here."""
    site = getattr(request, "site", None)
    sender = getattr(site, "sender", None)
    transport = getattr(request.channel, "transport", None)
    if (sender is None or not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False)
            or transport._tempDataLen or transport.offset != len(transport.dataBuffer)):
        return False  # (the transport's producer is the HTTP channel itself: it writes nothing on its own)
    head = _head_bytes(request)
    if head is None:
        return False
    request.startedWriting = 1  # the head is the thread's to send
    reactor = site.reactor

    def ended(outcome) -> None:  # in the reactor thread
        f.close()
        if outcome is None:
            if not request._disconnected:
                request.sentLength = length  # for the access log
                request.finish()
            return
        if outcome == "stalled":
            site.throttled.warning("stall", f"cut off a download to {request.getClientAddress().host} that took "
                                         f"nothing for {site.stall_timeout:g} s")
        if outcome != "cancelled" and not request._disconnected:
            transport.abortConnection()

    job = sender.submit(transport.fileno(), head, f.fileno(), offset, length,
                        getattr(site, "stall_timeout", None), lambda outcome: reactor.callFromThread(ended, outcome))
    request.notifyFinish().addErrback(lambda _: sender.cancel(job))
    return True


def _read_only(render):
    """``Resource.render`` for the tree: GET and HEAD, and a plain 405 naming them for anything else
    (Twisted's own answer to an unknown method is a 501 page)."""
    def answer(self, request):
        if request.method in (b"GET", b"HEAD"):
            return render(self, request)
        request.setResponseCode(http.NOT_ALLOWED)
        request.setHeader(b"allow", b"GET, HEAD")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"405 the image tree is read-only: GET or HEAD\n"
    return answer


def _open_regular(path: str):
    """The file at ``path`` opened for reading, or None unless it is a regular file.  O_NONBLOCK so a
    FIFO put in place of a file cannot block the reactor in open(2); the check is on the open file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


class TreeNode(resource.Resource):
    """A leaf resource for one path under the tree (resolved at render time).

    Refusals (outside the tree, hidden, unreadable, not a file or directory) are all the same plain
    404, so a probe learns nothing about what exists."""

    isLeaf = True
    render = _read_only(resource.Resource.render)

    def __init__(self, root_real: str, segments: list[bytes]):
        super().__init__()
        self.root_real = root_real
        self.segments = segments

    def render_HEAD(self, request):
        return self.render_GET(request)

    def render_GET(self, request):
        try:
            segs = [s.decode("utf-8") for s in self.segments]
            path = resolve(self.root_real, segs)
            st = os.stat(path)
        except (Refused, UnicodeDecodeError, OSError):
            return _not_found(request)
        if stat.S_ISDIR(st.st_mode):
            if not request.path.endswith(b"/"):
                # built from the checked segments, never from the request: "//host" must not become a
                # Location a browser reads as another host
                request.redirect(canonical_location(segs).encode("ascii"))
                return b""
            try:
                index = resolve(self.root_real, [*segs, "index.html"])
            except Refused:
                index = None
            if index is not None and os.path.isfile(index):
                return self._file(request, index)
            return self._listing(request, path)
        return self._file(request, path)

    def _file(self, request, path: str):
        f = _open_regular(path)
        if f is None:
            return _not_found(request)
        st = os.fstat(f.fileno())  # what we send is this open file, whatever the path becomes
        size = st.st_size
        etag = f'"{size:x}-{st.st_mtime_ns:x}"'
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"content-type", content_type(os.path.basename(path)).encode())
        request.setHeader(b"x-content-type-options", b"nosniff")  # a log or config is never run as a page
        request.setHeader(b"etag", etag.encode())
        request.setHeader(b"last-modified", http.datetimeToString(st.st_mtime))
        if not_modified(etag, st.st_mtime, _header(request, b"if-none-match"),
                        _header(request, b"if-modified-since")):
            f.close()
            request.setResponseCode(http.NOT_MODIFIED)
            return b""
        rng = parse_range(_header(request, b"range"), size)
        if_range = _header(request, b"if-range")
        if rng is not None and if_range and if_range.strip() != etag:
            rng = None  # the client's partial copy is of another version (or dated): send it all
        if rng == "unsatisfiable":
            f.close()
            request.setResponseCode(http.REQUESTED_RANGE_NOT_SATISFIABLE)
            request.setHeader(b"content-range", b"bytes */%d" % size)
            request.setHeader(b"content-length", b"0")
            return b""
        if rng is None:
            first, length = 0, size
        else:
            first, last = rng
            length = last - first + 1
            request.setResponseCode(http.PARTIAL_CONTENT)
            request.setHeader(b"content-range", b"bytes %d-%d/%d" % (first, last, size))
        request.setHeader(b"content-length", b"%d" % length)
        if request.method == b"HEAD" or length == 0:
            f.close()
            return b""
        if not _send_in_thread(request, f, first, length):
            FileProducer(request, f, first, length).start()
        return server.NOT_DONE_YET

    def _listing(self, request, path: str) -> bytes:
        """A plain listing for directories without index.html (an image directory, for instance)."""
        try:
            entries = list_dir(self.root_real, path)
        except OSError:
            return _not_found(request)
        rows = []
        for e in entries:
            name = e.name + ("/" if e.is_dir else "")
            size = "" if e.size is None else str(e.size)
            rows.append(f'<tr><td><a href="{quote(name, safe="/+")}">{html.escape(name)}</a></td>'
                        f'<td align="right">{size}</td></tr>')
        title = html.escape(request.path.decode("utf-8", "replace"))
        up = "" if path == self.root_real else '<p><a href="../">../</a></p>'  # nothing above the root
        body = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>"
                f"<h1>{title}</h1>{up}<table>{''.join(rows)}</table>"
                "</body></html>\n")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return body.encode()


def _header(request, name: bytes) -> str | None:
    v = request.getHeader(name)
    return v.decode("latin-1") if isinstance(v, bytes) else v


class TreeRoot(resource.Resource):
    """The tree's root: mounted children (``putChild``) first, else a path into the tree."""

    render = _read_only(resource.Resource.render)
    max_body = 0  # read-only: a request body is refused before it is read (httpguard.BodyLimit)

    def __init__(self, root: str | os.PathLike):
        super().__init__()
        self.root_real = os.path.realpath(root)

    def getChild(self, name: bytes, request):
        # Resource traversal already popped ``name``; the leaf takes the rest of the path.
        segments = [name, *request.postpath]
        request.prepath.extend(request.postpath)
        request.postpath = []
        return TreeNode(self.root_real, segments)

    def render_GET(self, request):  # "GET" with an empty path, e.g. an absolute-form request target
        return TreeNode(self.root_real, []).render_GET(request)

    render_HEAD = render_GET


class ShaResource(resource.Resource):
    """``GET /sha/<sha or prefix>[?branch=&build=&arch=]`` answers JSON from the tree's index.json.

    200 ``{"sha": full, "images": [index entries]}``; 404 ``{"error"}`` (no such commit, or not with
    those filters); 409 ``{"error", "matches": [{"sha", "names"}]}`` (ambiguous prefix); 400 for
    something that is not hex.  index.json is re-read (in a thread: 10 MB at 10,000 images) only when
    it changed; requests arriving meanwhile wait for it, so an image is found right after its publish.
    """

    isLeaf = True

    def __init__(self, root: str | os.PathLike):
        super().__init__()
        self.index_path = os.path.join(root, "index.json")
        self._key = None
        self._lookup = ShaLookup([])
        self._waiters: list[defer.Deferred] = []  # requests waiting for the index being read

    def _stat_key(self):
        try:
            st = os.stat(self.index_path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> ShaLookup:
        return ShaLookup(read_index(self.index_path).entries())

    def lookup(self) -> defer.Deferred:
        """Deferred ShaLookup over the current index.json."""
        key = self._stat_key()
        if key == self._key:
            return defer.succeed(self._lookup)
        if key is None:
            self._key, self._lookup = None, ShaLookup([])
            return defer.succeed(self._lookup)
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:  # nobody is reading it yet
            threads.deferToThread(self._read).addBoth(self._loaded, key)
        return waiter

    def _loaded(self, result, key) -> None:
        waiters, self._waiters = self._waiters, []
        if isinstance(result, failure.Failure):
            for w in waiters:
                w.errback(result)
            return
        self._key, self._lookup = key, result
        for w in waiters:
            w.callback(result)

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-cache")
        prefix = b"/".join(request.postpath).decode("utf-8", "replace")
        filters = {k: request.args[k.encode()][0].decode("utf-8", "replace")
                   for k in ("branch", "build", "arch") if k.encode() in request.args}

        def answer(lookup):
            try:
                sha, images = lookup.find(prefix, **filters)
                return _json(request, http.OK, {"sha": sha, "images": images})
            except BadPrefix as e:
                return _json(request, http.BAD_REQUEST, {"error": str(e)})
            except NotFound as e:
                return _json(request, http.NOT_FOUND, {"error": str(e)})
            except Ambiguous as e:
                return _json(request, http.CONFLICT, {"error": str(e), "matches": e.matches})

        def unreadable(f):
            log.msg(f"sha lookup: cannot read {self.index_path}: {f.getErrorMessage()}")
            return _json(request, http.SERVICE_UNAVAILABLE, {"error": "the index cannot be read now"})

        gone = []  # the client hung up while the index was read: nothing to write to
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def send(body):
            if not gone:
                request.setHeader(b"content-length", b"%d" % len(body))
                request.write(body)
                request.finish()

        d = self.lookup()
        d.addCallbacks(answer, unreadable).addCallback(send)
        d.addErrback(log.err)
        return server.NOT_DONE_YET

    render_HEAD = render_GET


def _json(request, code: int, obj) -> bytes:
    request.setResponseCode(code)
    return (json.dumps(obj, indent=1) + "\n").encode()


def make_site(root: str | os.PathLike, access_log: str | None = None, sha: bool = True,
              head_timeout: float = HEAD_TIMEOUT, per_address: int = PER_ADDRESS_LIMIT,
              stall_timeout: float = STALL_TIMEOUT) -> server.Site:
    """A Site serving ``root``; ``site.resource.putChild(b"name", r)`` mounts more.  ``access_log`` is a
    file for the combined-format access log (default: the Twisted log, i.e. the master's twistd.log).
    Its connections have a request deadline and a per-address cap (imagetree/httpguard.py)."""
    tree = TreeRoot(root)
    if sha:
        tree.putChild(b"sha", ShaResource(root))
    site = GuardedSite(tree, logPath=access_log, head_timeout=head_timeout, per_address=per_address,
                       stall_timeout=stall_timeout)
    site.displayTracebacks = False
    site.sender = Sender(say=lambda line: log.msg(f"image server: {line}"))
    return site


def serve_forever(root: str, port: int, bind: str = "127.0.0.1", access_log: str | None = None,
                  **limits) -> None:
    """Run a standalone server (``buildbot-kernel images serve``); prints the URL once listening.
    ``limits``: ``head_timeout``, ``per_address``, ``stall_timeout`` (see make_site)."""
    import sys

    from twisted.internet import reactor

    log.startLogging(sys.stdout, setStdout=False)  # errors and refusals; requests go to access_log if given
    listening = reactor.listenTCP(port, make_site(root, access_log=access_log, **limits), interface=bind)
    print(f"serving {os.path.abspath(root)} at http://{bind}:{listening.getHost().port}/", flush=True)
    reactor.run()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="the embedded image server, standalone")
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--access-log")
    ap.add_argument("--head-timeout", type=float, default=HEAD_TIMEOUT,
                    help="seconds a client has to send a whole request (default %(default)s)")
    ap.add_argument("--per-address", type=int, default=PER_ADDRESS_LIMIT,
                    help="open connections allowed from one client address (default %(default)s)")
    ap.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT,
                    help="seconds a download may go without the client reading (default %(default)s)")
    a = ap.parse_args()
    serve_forever(a.root, a.port, a.bind, a.access_log, head_timeout=a.head_timeout, per_address=a.per_address,
                  stall_timeout=a.stall_timeout)
