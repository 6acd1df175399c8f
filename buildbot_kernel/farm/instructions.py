"""Boot instructions for one bisect step on one machine, and the single-use token that ties a report to it.

"Setting the default kernel" of a test machine is writing an :class:`Assignment`; stage 1 (or stage 2 of
the previous candidate) fetches it as plain ``KEY=value`` lines that busybox sh parses without a JSON
tool.  Every value is one line: a newline inside a URL or command line would let one field forge another,
so rendering refuses it, and :func:`make_assignment` renders once, so an assignment that cannot be sent
is refused before any machine is given it.  The token is unguessable and used once, so a late report of a
previous attempt, a replayed POST or a forged one can never decide a step (docs/farm-protocol.md, "Boot
instructions").
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from buildbot_kernel.settings import Machine

from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.naming import CONTROL

# the keys stage 1 understands (scripts/stage1/bbk-lib.sh, bbk_parse_instructions)
KEYS = ("NAME", "TOKEN", "KERNEL_URL", "KERNEL_SHA256", "INITRD_URL", "INITRD_SHA256", "MODULES_URL",
        "MODULES_SHA256", "CMDLINE", "WAIT", "REBOOT")
MODES = ("boot", "test")


class InstructionError(BuildbotKernelError, ValueError):
    """An image entry or machine setting that cannot become boot instructions; says which field."""


@dataclass(frozen=True)
class BootFile:
    url: str
    sha256: str


@dataclass
class Assignment:
    """One attempt of one step: what to boot, how to check it, what to run, and its token."""

    machine: str
    image: str
    token: str
    kernel: BootFile
    cmdline: str
    test_command: str
    mode: str
    initrd: BootFile | None = None
    modules: BootFile | None = None
    attempt: int = 1
    issued_at: float = 0.0
    phase: str = "assigned"  # assigned -> fetched -> kexec -> running (see registry)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Assignment:
        d = dict(d)
        for k in ("kernel", "initrd", "modules"):
            if d.get(k) is not None:
                d[k] = BootFile(**d[k])
        return cls(**d)


def new_token() -> str:
    """128 random bits in hex: safe on a kernel command line, in a URL and in a form field."""
    return secrets.token_hex(16)


def rebase_url(url: str, public_base: str, machine_base: str) -> str:
    """The image URL as the machine reaches it.

    index.json holds URLs under the public base (``http://localhost:8011``); a QEMU guest reaches the
    host's loopback as 10.0.2.2, a lab machine perhaps through another name.  Only the prefix changes.
    """
    if public_base and machine_base and url.startswith(public_base.rstrip("/") + "/"):
        return machine_base.rstrip("/") + url[len(public_base.rstrip("/")):]
    return url


def _file(entry: dict, fname: str, required: bool, public_base: str, machine_base: str) -> BootFile | None:
    files = entry.get("files")
    if not isinstance(files, dict):
        raise InstructionError(f"image {entry.get('name')!r}: 'files' must map file names to "
                               "{size, sha256} (metadata.json contract)")
    meta = files.get(fname)
    if meta is None:
        if required:
            raise InstructionError(f"image {entry.get('name')!r}: files.{fname} missing; the image "
                                   f"directory must contain {fname}")
        return None
    sha = meta.get("sha256") if isinstance(meta, dict) else None
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise InstructionError(f"image {entry.get('name')!r}: files.{fname}.sha256 must be 64 lowercase "
                               f"hex digits, got {sha!r}")
    return BootFile(rebase_url(entry["url"] + fname, public_base, machine_base), sha)


def make_assignment(
    machine: Machine,
    image_entry: dict,
    test_command: str,
    mode: str,
    server_url: str,
    *,
    public_base: str = "",
    initrd: BootFile | None = None,
    attempt: int = 1,
    now: float = 0.0,
) -> Assignment:
    """An attempt for ``machine`` (a validated ``[[machine]]``, docs/settings.md) to boot ``image_entry`` (index.json).

    ``server_url`` is the server as the machine sees it; stage 2 reads it (and the token) back from the
    candidate's command line, so the candidate kernel needs no configuration of its own.
    """
    name = image_entry.get("name")
    if not isinstance(name, str) or not name:
        raise InstructionError("image entry: 'name' missing (the image name, which uname -r must equal)")
    url = image_entry.get("url")
    if not isinstance(url, str) or not url.endswith("/"):
        raise InstructionError(f"image {name!r}: 'url' must be the image directory URL ending in '/', "
                               f"got {url!r}")
    if mode not in MODES:
        raise InstructionError(f"mode: expected one of {list(MODES)}, got {mode!r}")
    if not server_url.startswith(("http://", "https://")):
        raise InstructionError(f"machine {machine.name!r}: server URL {server_url!r} is not http(s)")
    kernel = _file(image_entry, "vmlinuz", True, public_base, server_url)
    modules = None
    if machine.install_modules:
        modules = _file(image_entry, "modules.tar.xz", False, public_base, server_url)
    token = new_token()
    cmdline = " ".join(p for p in (
        machine.cmdline.strip(),
        f"bbk.server={server_url.rstrip('/')}",
        f"bbk.machine={machine.name}",
        f"bbk.token={token}",
        "bbk.stage=2",
    ) if p)
    a = Assignment(machine=machine.name, image=name, token=token, kernel=kernel, cmdline=cmdline,
                   test_command=test_command, mode=mode, initrd=initrd, modules=modules, attempt=attempt,
                   issued_at=now)
    render(a)
    return a


def control_problem(value: str) -> str:
    """Why ``value`` cannot be one boot instruction value, or "".  It never quotes the value: the command
    line holds the live token, and the message may reach a log or a step summary."""
    m = CONTROL.search(value)  # a newline forges another key; a tab or an escape is no better
    return f"holds the control character {m.group()!r} at position {m.start()}" if m else ""


def _line(key: str, value: str) -> str:
    problem = control_problem(value)
    if problem:
        raise InstructionError(f"{key}: a boot instruction value must be one line without control characters; "
                               f"this one {problem}")
    return f"{key}={value}\n"


def render(a: Assignment) -> str:
    """The ``KEY=value`` body of ``GET /machines/<name>/boot`` for an assignment."""
    out = [_line("NAME", a.image), _line("TOKEN", a.token),
           _line("KERNEL_URL", a.kernel.url), _line("KERNEL_SHA256", a.kernel.sha256)]
    if a.initrd:
        out += [_line("INITRD_URL", a.initrd.url), _line("INITRD_SHA256", a.initrd.sha256)]
    if a.modules:
        out += [_line("MODULES_URL", a.modules.url), _line("MODULES_SHA256", a.modules.sha256)]
    out.append(_line("CMDLINE", a.cmdline))
    return "".join(out)


def render_wait(seconds: int) -> str:
    """Nothing assigned: poll again after ``seconds``."""
    return _line("WAIT", str(int(seconds)))


def render_reboot(seconds: int) -> str:
    """Nothing assigned and the machine should be back in stage 1: a candidate's stage 2 reboots (the
    firmware boots stage 1); stage 1 itself ignores ``REBOOT`` and polls again after ``seconds``."""
    return _line("REBOOT", "1") + render_wait(seconds)


def parse(text: str) -> dict[str, str]:
    """Read instructions back the way stage 1 does (first ``=`` splits; unknown keys ignored)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in KEYS:
            out[key] = value
    return out


@dataclass
class TokenLedger:
    """Which tokens a machine was given and what became of them, to tell forged from replayed/stale.

    Bounded: only the last ``keep`` tokens are remembered; an older one is reported as forged, which is
    still refused.
    """

    history: dict[str, str] = field(default_factory=dict)  # token -> "live" | "used" | "superseded"
    keep: int = 64

    def issue(self, token: str) -> None:
        for t, state in self.history.items():
            if state == "live":
                self.history[t] = "superseded"
        self.history[token] = "live"
        while len(self.history) > self.keep:
            self.history.pop(next(iter(self.history)))

    def judge(self, token: str) -> str:
        """``ok`` for the live token, else why it is refused: ``replayed``, ``stale`` or ``forged``."""
        state = self.history.get(token or "")
        return {"live": "ok", "used": "replayed", "superseded": "stale"}.get(state, "forged")

    def consume(self, token: str) -> None:
        if self.history.get(token) == "live":
            self.history[token] = "used"

    def withdraw(self) -> None:
        """The live token stops being valid (the driver gave up on the attempt)."""
        for t, state in self.history.items():
            if state == "live":
                self.history[t] = "superseded"
