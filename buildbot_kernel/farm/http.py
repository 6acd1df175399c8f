"""The machines' side of the farm over HTTP (a Twisted Resource mounted at ``/machines``).

URL layout (the contract for machines: docs/farm-protocol.md).  Every request under ``/machines/<name>/`` carries the
machine's key, as the header ``X-BBK-Key`` or the form field ``key``; without it (or with another) the
answer is 403 and nothing changes.  GET requests never change state.

- ``GET  /machines/<name>``: the machine's state as JSON;
- ``POST /machines/<name>/boot`` (form field ``stage``: 1 or 2): the machine asks for its boot
  instructions (``KEY=value`` lines, ``WAIT=<seconds>``, or ``REBOOT=1`` for a released machine that
  should go back to stage 1); this is what marks it as polling and an assignment as fetched.  An idle
  poll (a ``WAIT`` answer) is left out of the access log but for one line per machine and interval;
- ``GET  /machines/<name>/boot``: the same answer, changing nothing (for an admin with the key);
- ``POST /machines/<name>/report``: urlencoded ``result, stage, token, uname, error, reason, log``;
  a report without the live single-use token is refused with 403;
- ``GET  /machines/<name>/test?token=T``: the step's test command, for stage 2;
- ``GET  /machines/<name>/initrd``: the local OS handed to candidates of a diskless (QEMU) machine.

``/machines/`` itself lists nothing and an unknown machine is a 404 that names none: the machines'
state is on the web UI's dashboard.  A request body larger than :data:`MAX_REPORT_BYTES` is refused
before it is read, by the image server's :class:`~buildbot_kernel.imagetree.httpguard.BodyLimit`.
All logic lives in :mod:`buildbot_kernel.farm.registry`; this only translates HTTP.
"""

from __future__ import annotations

import json
import logging
import os
from urllib.parse import parse_qs

from twisted.web import resource, static

from buildbot_kernel.farm import instructions
from buildbot_kernel.farm.registry import Registry
from buildbot_kernel.ratelog import RateLimitedLog
from buildbot_kernel.settings import default

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 256 * 1024
KEY_HEADER = b"x-bbk-key"
NO_LISTING = "no listing here: the test machines' state is on the web UI's dashboard\n"


def _text(request, code: int, body: str, ctype: bytes = b"text/plain; charset=utf-8") -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", ctype)
    request.setHeader(b"cache-control", b"no-store")
    return body.encode()


def _json(request, obj) -> bytes:
    return _text(request, 200, json.dumps(obj, indent=1, sort_keys=True) + "\n", b"application/json")


def _peer(request) -> str:
    addr = request.getClientAddress()
    return getattr(addr, "host", "") or str(addr)


def presented_key(request) -> bytes | None:
    """The key the request carries: the ``X-BBK-Key`` header, else the last ``key`` form/query field."""
    header = request.getHeader(KEY_HEADER)
    if header:
        return header.strip()
    field = (request.args or {}).get(b"key")
    return field[-1].strip() if field else None


class MachinesResource(resource.Resource):
    """``/machines``; ``poll`` maps machine name -> seconds between polls (the ``WAIT`` answer) and
    ``initrds`` machine name -> local path of the initrd served as ``/machines/<name>/initrd``."""

    max_body = MAX_REPORT_BYTES  # read by BodyLimit before the body is

    def __init__(self, registry: Registry, poll: dict[str, int] | None = None,
                 initrds: dict[str, str] | None = None):
        super().__init__()
        self.registry = registry
        self.poll = poll if poll is not None else {}  # the factory fills these in after creation
        self.initrds = initrds if initrds is not None else {}
        self.refusals = RateLimitedLog(log.warning)

    def render(self, request):
        return _text(request, 404, NO_LISTING)

    def getChild(self, path, request):
        if path == b"":
            return _Answer(404, NO_LISTING)
        name = path.decode("utf-8", "replace")
        if name not in self.registry.machines:
            self.refusals.warning("unknown", "farm: request for an unknown machine from %s", _peer(request))
            return _Answer(404, "unknown machine\n")
        if not self.registry.authorized(name, presented_key(request)):
            self.refusals.warning(f"key {name}", "farm: request for %s from %s refused: missing or wrong "
                                  "machine key", name, _peer(request))
            return _Answer(403, f"refused: requests for machine {name} need its key (header X-BBK-Key or "
                                "form field key)\n")
        return MachineResource(self, name)

    def body_refused(self, request, length) -> None:
        self.refusals.warning("body", "farm: refused a request body of %s bytes (limit %d) from %s",
                              length if length is not None else "more than the", self.max_body, _peer(request))


class MachineResource(resource.Resource):
    def __init__(self, parent: MachinesResource, name: str):
        super().__init__()
        self.parent = parent
        self.name = name

    def getChild(self, path, request):
        if path == b"":
            return self
        if path == b"boot":
            return _Leaf(self._peek, self._boot)
        if path == b"report":
            return _Leaf(post=self._report)
        if path == b"test":
            return _Leaf(self._test)
        if path == b"initrd" and self.name in self.parent.initrds:
            f = static.File(os.fspath(self.parent.initrds[self.name]), defaultType="application/octet-stream")
            f.isLeaf = True
            return f
        return _Answer(404, "no such resource under this machine (boot, report, test, initrd)\n")

    def render_GET(self, request):
        return _json(request, self.parent.registry.get(self.name).public())

    def _instructions(self, request, a) -> bytes:
        wait = self.parent.poll.get(self.name, default("machine", "poll"))
        if a is None and self.parent.registry.wants_stage1(self.name):
            return _text(request, 200, instructions.render_reboot(wait))
        if a is None:
            request.log_cause = f"idle poll {self.name}"  # read by the site's access log (GuardedSite.log)
            return _text(request, 200, instructions.render_wait(wait))
        return _text(request, 200, instructions.render(a))

    def _peek(self, request):
        return self._instructions(request, self.parent.registry.peek(self.name))

    def _boot(self, request):
        stage = (request.args.get(b"stage") or [b""])[-1].decode("ascii", "replace")
        return self._instructions(request, self.parent.registry.boot_request(self.name, stage))

    def _report(self, request):
        request.content.seek(0)
        body = request.content.read(MAX_REPORT_BYTES + 1)
        if len(body) > MAX_REPORT_BYTES:  # only without BodyLimit on the Site: then it was read already
            return _text(request, 413, f"report larger than {MAX_REPORT_BYTES} bytes\n")
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        fields = {k: v[-1] for k, v in form.items()}
        ok, why = self.parent.registry.report(self.name, fields, peer=_peer(request))
        if not ok:
            return _text(request, 403, f"refused: {why}\n")
        return _text(request, 200, "ok\n")

    def _test(self, request):
        token = (request.args.get(b"token") or [b""])[-1].decode("utf-8", "replace")
        cmd = self.parent.registry.test_command(self.name, token)
        if cmd is None:
            return _text(request, 403, "refused: no live assignment with this token\n")
        return _text(request, 200, cmd if cmd.endswith("\n") else cmd + "\n")


class _Answer(resource.Resource):
    """A fixed answer for every method and every path below."""

    isLeaf = True

    def __init__(self, code: int, body: str):
        super().__init__()
        self.code, self.body = code, body

    def render(self, request):
        return _text(request, self.code, self.body)


class _Leaf(resource.Resource):
    isLeaf = True

    def __init__(self, get=None, post=None):
        super().__init__()
        self._get, self._post = get, post

    def render_GET(self, request):
        if self._get is None:
            return _text(request, 405, "use POST\n")
        return self._get(request)

    def render_POST(self, request):
        if self._post is None:
            return _text(request, 405, "use GET\n")
        return self._post(request)
