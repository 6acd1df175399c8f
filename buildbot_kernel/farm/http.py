"""The machines' side of the farm over HTTP (a Twisted Resource mounted at ``/machines``).

URL layout (contract, DESIGN section 7):

- ``GET  /machines/`` (or ``/machines``): every machine's state as JSON, for the UI;
- ``GET  /machines/<name>``: one machine's state as JSON;
- ``GET  /machines/<name>/boot``: boot instructions as ``KEY=value`` lines, or ``WAIT=<seconds>``;
- ``POST /machines/<name>/report``: urlencoded ``result, stage, token, uname, error, reason, log``;
  a report without the live single-use token is refused with 403 (and logged by the registry);
- ``GET  /machines/<name>/test?token=T``: the step's test command, for stage 2;
- ``GET  /machines/<name>/initrd``: the local OS handed to candidates of a diskless (QEMU) machine.

All logic lives in :mod:`buildbot_kernel.farm.registry`; this only translates HTTP.
"""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qs

from twisted.web import resource, static
from twisted.web.pages import notFound

from buildbot_kernel.farm import instructions
from buildbot_kernel.farm.registry import Registry, UnknownMachine

MAX_REPORT_BYTES = 256 * 1024


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


class MachinesResource(resource.Resource):
    """``/machines``; ``poll`` maps machine name -> seconds between polls (the ``WAIT`` answer) and
    ``initrds`` machine name -> local path of the initrd served as ``/machines/<name>/initrd``."""

    def __init__(self, registry: Registry, poll: dict[str, int] | None = None,
                 initrds: dict[str, str] | None = None):
        super().__init__()
        self.registry = registry
        self.poll = poll if poll is not None else {}  # the factory fills these in after creation
        self.initrds = initrds if initrds is not None else {}

    def getChild(self, path, request):
        if path == b"":
            return self
        name = path.decode("utf-8", "replace")
        try:
            self.registry.get(name)
        except UnknownMachine:
            return notFound("Unknown machine", f"unknown machine {name!r} (configured: "
                            f"{', '.join(sorted(self.registry.machines)) or 'none'})")
        return MachineResource(self, name)

    def render_GET(self, request):
        return _json(request, self.registry.snapshot())


class MachineResource(resource.Resource):
    def __init__(self, parent: MachinesResource, name: str):
        super().__init__()
        self.parent = parent
        self.name = name

    def getChild(self, path, request):
        if path == b"":
            return self
        if path == b"boot":
            return _Leaf(self._boot)
        if path == b"report":
            return _Leaf(post=self._report)
        if path == b"test":
            return _Leaf(self._test)
        if path == b"initrd" and self.name in self.parent.initrds:
            f = static.File(os.fspath(self.parent.initrds[self.name]), defaultType="application/octet-stream")
            f.isLeaf = True
            return f
        return notFound("No such resource", f"no {path.decode('utf-8', 'replace')!r} under "
                        f"/machines/{self.name}/ (boot, report, test, initrd)")

    def render_GET(self, request):
        return _json(request, self.parent.registry.get(self.name).public())

    def _boot(self, request):
        a = self.parent.registry.boot_request(self.name)
        if a is None:
            return _text(request, 200, instructions.render_wait(self.parent.poll.get(self.name, 5)))
        return _text(request, 200, instructions.render(a))

    def _report(self, request):
        body = request.content.read(MAX_REPORT_BYTES + 1)
        if len(body) > MAX_REPORT_BYTES:
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
