"""Holes of the hostile review after the closed loop landed, each driven through the real part the way a
machine, a lab user, a maintainer or a commit reaches it (real HTTP on 127.0.0.1, the real settings
parser, the real force-form field, the real compile-log reader): machine keys leaking past the key rules
(report fields, the access log), secrets and state inside the served tree, request bodies nobody reads,
a compile log line that stalled the master's reactor, a Build-form revision git read as an option, and
machine names that rewrote the candidate's kernel command line.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from buildbot.schedulers.forcesched import ValidationError

from buildbot_kernel import settings
from buildbot_kernel.farm import instructions as ins
from buildbot_kernel.farm.http import MachinesResource
from buildbot_kernel.farm.registry import FIELD_CHARS, LOG_TAIL_CHARS, Registry
from buildbot_kernel.farm.testing import ReactorThread
from buildbot_kernel.farm.testing import http_get as get
from buildbot_kernel.farm.testing import http_post as post
from buildbot_kernel.imagetree.httpguard import redacted_uri
from buildbot_kernel.imagetree.server import make_site
from buildbot_kernel.kbuild_output import KbuildProgress, linker_error
from buildbot_kernel.master.config import revision_field as revision_field_of_the_build_form
from buildbot_kernel.resources import shipped
from buildbot_kernel.settings import Machine

KEY = "Kx9-secret-machine-key-0123456789-abcdef"
IMAGE = {"name": "6.1.0-good", "url": "http://h/i/", "files": {"vmlinuz": {"sha256": "ab" * 32}}}


class Served:
    """The image server as the master builds it (make_site, with its access log) and /machines on it,
    as the farm service mounts it."""

    def __init__(self, tmp: Path):
        (tmp / "tree").mkdir()
        self.access_log = tmp / "access.log"
        self.registry = Registry(["m1"], tmp / "state.json", keys={"m1": KEY})

        def listen():
            from twisted.internet import reactor

            site = make_site(tmp / "tree", access_log=str(self.access_log))
            site.resource.putChild(b"machines", MachinesResource(self.registry, {"m1": 1}))
            self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
            return self.port.getHost().port

        ReactorThread.ensure()
        self.url = f"http://127.0.0.1:{ReactorThread.call(listen)}"

    def stop(self):
        ReactorThread.call(self.port.stopListening)

    def assign(self) -> ins.Assignment:
        a = ins.make_assignment(Machine(name="m1"), IMAGE, "true", "boot", self.url)
        self.registry.assign(a)
        self.registry.boot_request("m1")
        return a


@pytest.fixture
def served(tmp_path):
    s = Served(tmp_path)
    yield s
    s.stop()


# --- the machine key in reports ----------------------------------------------------------------------

def test_a_key_the_log_tail_cuts_through_leaves_no_part_of_it(served):
    """The hole: the log was cut to its last 4000 characters first and the key replaced after, so a key
    straddling the cut was no longer found and all but its first characters stayed in the report the
    dashboard, the step log and the tree's tests/<test>.log show."""
    a = served.assign()
    log = "x" * 5000 + KEY + "y" * (LOG_TAIL_CHARS - len(KEY) + 3)  # the cut falls 3 characters into the key
    code, _ = post(f"{served.url}/machines/m1/report",
                   {"result": "good", "token": a.token, "uname": IMAGE["name"], "log": log}, key=KEY)
    assert code == 200
    kept = served.registry.get("m1").last_report["log"]
    assert KEY[3:] not in kept and KEY[-8:] not in kept, kept[:80]
    assert "<machine key>" in kept and len(kept) == LOG_TAIL_CHARS and kept.endswith("y" * 100)


def test_every_report_field_has_the_key_replaced_and_a_bound(served):
    """The hole: only ``log`` and ``reason`` had the key replaced, and only ``log`` was bounded: a stage-1
    error text or a uname holding the key was kept as is, and a 250 KiB ``uname`` became the machine's
    ``last_kernel`` on every dashboard refresh and in the state file."""
    a = served.assign()
    fields = {"result": "boot-error", "token": a.token, "stage": "1", "error": f"download bbk.key={KEY}",
              "reason": f"cmdline was bbk.key={KEY}", "uname": "u" * 200_000, "log": "ok"}
    code, _ = post(f"{served.url}/machines/m1/report", fields, key=KEY)
    assert code == 200
    report = served.registry.get("m1").last_report
    for k in ("error", "reason", "uname", "log", "stage", "result", "token"):
        assert KEY not in report[k], k
        assert len(report[k]) <= max(FIELD_CHARS, LOG_TAIL_CHARS), k
    assert report["error"] == "download bbk.key=<machine key>"
    assert len(report["uname"]) == FIELD_CHARS
    assert KEY not in Path(served.registry.path).read_text()  # the state file


# --- the machine key in the access log ---------------------------------------------------------------

def test_the_access_log_never_holds_a_machine_key(served):
    """The hole: README allows the key as a ``key`` field, and a GET carries it in the query string, which
    the image server's access log (the master's twistd.log by default) wrote as it came."""
    served.assign()
    for field in ("key", "%6Bey", "k%65y"):  # Twisted decodes the field name, so these are the key too
        code, body = get(f"{served.url}/machines/m1/boot?stage=1&{field}={KEY}")
        assert code == 200 and "TOKEN=" in body, (field, code, body)
    code, _ = get(f"{served.url}/index.html?key={KEY}&x=1")  # anywhere on the site
    assert code == 404

    def logged():
        text = served.access_log.read_text() if served.access_log.exists() else ""
        return text if text.count("\n") >= 4 else ""
    deadline = time.monotonic() + 20
    while not logged() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = logged()
    assert text, "the access log did not get the four requests"
    assert KEY not in text and KEY[:12] not in text, text
    assert "/machines/m1/boot?stage=1&key=<redacted>" in text
    assert "/machines/m1/boot?stage=1&%6Bey=<redacted>" in text
    assert "/index.html?key=<redacted>&x=1" in text


@pytest.mark.parametrize("uri, logged", [
    (b"/a", b"/a"),
    (b"/a?b=1", b"/a?b=1"),
    (b"/a?key=s", b"/a?key=<redacted>"),
    (b"/a?key", b"/a?key"),  # no value: nothing to hide
    (b"/a?x=1&key=s&key=t;u&y=%20", b"/a?x=1&key=<redacted>&key=<redacted>&y=%20"),
    (b"/a?ke+y=s&keys=s&+key=s", b"/a?ke+y=s&keys=s&+key=s"),  # other fields ("ke y", "keys", " key")
])
def test_redacted_uri(uri, logged):
    assert redacted_uri(uri) == logged


# --- request bodies nobody reads ----------------------------------------------------------------------

def _raw(url: str, data: bytes, seconds: float = 8) -> bytes:
    """What the server answers to ``data`` within ``seconds`` (its request deadline is 10 s)."""
    out = b""
    with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=seconds) as c:
        c.sendall(data)
        try:
            while chunk := c.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


@pytest.mark.parametrize("head", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
    b"PUT /drm-tip/x/vmlinuz HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n",
    b"GET /sha/abcd HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n",
    b"POST /index.html HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n",
    b"POST /machines/m1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n",
])
def test_a_body_the_image_server_has_no_use_for_is_refused_before_it_is_read(served, head):
    """The hole: only /machines had a body limit, and only when a test farm was configured.  A POST of
    any size to the tree (or /sha) was spooled by Twisted into a temporary file of the master for as
    long as the request deadline let it, from every one of 512 connections; on a tmpfs /tmp that is RAM.
    Now the tree and /sha take no body and the answer is 413 before any of it is read."""
    reply = _raw(served.url, head)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    code, body = get(f"{served.url}/machines/m1/boot", key=KEY)  # the server goes on answering
    assert code == 200 and body.startswith("WAIT=")


# --- secrets inside the served tree ------------------------------------------------------------------

SHIPPED = shipped("settings.toml").read_text()


def settings_text(state_dir: str = "state", extra: str = "") -> str:
    """The shipped settings (images.root = "images") with ``state_dir`` and more tables."""
    return SHIPPED.replace("[server]\n", f'[server]\nstate_dir = "{state_dir}"\n', 1) + extra


def _refused(text: str, path: Path) -> str:
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(text, str(path))
    return str(e.value)


@pytest.mark.parametrize("state_dir", ["images/state", "images", "images/../images/x"])
def test_a_state_directory_inside_the_image_tree_is_refused(tmp_path, state_dir):
    """The hole: nothing kept ``state_dir`` out of ``images.root``, and the image server reads what the
    master reads (0600 files too): the machine registry with live step tokens and the generated machine
    keys (state/farm/keys/) were one GET away for anyone on the lab network."""
    msg = _refused(settings_text(state_dir), tmp_path / "settings.toml")
    assert f"[server].state_dir: {state_dir!r} lies inside the image tree" in msg, msg
    assert "keep it outside [images].root" in msg


def test_state_beside_the_tree_is_fine(tmp_path):
    for state_dir in ("state", "images-state", str(tmp_path / "elsewhere")):
        settings.parse(settings_text(state_dir), str(tmp_path / "settings.toml"))


def test_key_htpasswd_and_mail_password_inside_the_image_tree_are_refused(tmp_path):
    keys = tmp_path / "images" / "keys"
    keys.mkdir(parents=True)
    (keys / "m1.key").write_text(KEY + "\n")
    (keys / "m1.key").chmod(0o600)
    (keys / "htpasswd").write_text("admin:$2y$05$" + "a" * 53 + "\n")
    (keys / "smtp.pw").write_text("pw\n")
    text = settings_text(extra="""
[[machine]]
name = "m1"
type = "remote"
power_cycle = "true"
key_file = "images/keys/m1.key"
[auth]
htpasswd = "images/keys/htpasswd"
[notify]
smtp = "mail.example.org:25"
from = "bbk@example.org"
to = ["ci@example.org"]
user = "bbk"
password_file = "images/keys/smtp.pw"
""")
    msg = _refused(text, tmp_path / "settings.toml")
    for where, value in (("[[machine]] ('m1').key_file", "images/keys/m1.key"),
                         ("[auth].htpasswd", "images/keys/htpasswd"),
                         ("[notify].password_file", "images/keys/smtp.pw")):
        assert f"{where}: {value!r} lies inside the image tree" in msg, (where, msg)


def _refused_for_master(text: str, settings_path: Path, master: Path) -> str:
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(text, str(settings_path), master_dir=str(master))
    return str(e.value)


def test_settings_elsewhere_still_keep_the_master_directory_unserved(tmp_path):
    """The hole: ``images.root`` and ``state_dir`` are relative to the master's directory, but the checks
    resolved them against the settings file's.  With ``$BUILDBOT_KERNEL_SETTINGS`` naming a file outside
    the master, ``root = "/srv/m"`` (the master itself) passed, and the image server served its
    settings, database, state directory and generated machine keys."""
    master, etc = tmp_path / "m", tmp_path / "etc"
    master.mkdir()
    etc.mkdir()
    text = SHIPPED.replace('root = "images"', f'root = "{master}"', 1)
    assert text != SHIPPED
    settings.parse(text, str(etc / "settings.toml"))  # the CLI, which knows no master: as before
    msg = _refused_for_master(text, etc / "settings.toml", master)
    assert f"[images].root: {str(master)!r} is the master's directory or the settings file's" in msg, msg
    # a state_dir relative to the master, inside a tree that is relative to the master too
    msg = _refused_for_master(settings_text("images/state"), etc / "settings.toml", master)
    assert "[server].state_dir: 'images/state' lies inside the image tree" in msg, msg


def test_every_reader_of_the_master_takes_the_tree_from_the_master_directory(tmp_path):
    """The checks above and the master agreed, but the master's farm service and the image tree's own
    constructor resolved images.root against the settings file's directory: with the settings kept
    elsewhere, the farm read another tree's index than the one the master published."""
    from buildbot_kernel.imagetree.tree import ImageTree

    master, etc = tmp_path / "m", tmp_path / "etc"
    master.mkdir()
    etc.mkdir()
    (etc / "settings.toml").write_text(SHIPPED)
    s = settings.load(etc / "settings.toml", master_dir=master)
    assert settings.tree_root(s) == ImageTree.from_settings(s).root == master / "images"
    assert settings.state_path(s) == master / "state"
    cli = settings.load(etc / "settings.toml")  # the CLI knows no master
    assert settings.tree_root(cli) == etc / "images"


def test_the_mail_outbox_stays_out_of_the_tree(tmp_path):
    """The hole: the master's mail outbox is ``<master>/state/outbox`` whatever ``state_dir`` says, and
    nothing kept it out of the tree: with ``root = "state"`` and the state elsewhere, a mail file anyone
    who may write to the tree put there was sent, through the master's mail login, to whom it named."""
    text = settings_text(str(tmp_path / "shared-state")).replace('root = "images"', 'root = "state"', 1)
    settings.parse(text, str(tmp_path / "settings.toml"))  # no master known: nothing to say of its outbox
    msg = _refused_for_master(text, tmp_path / "settings.toml", tmp_path)
    assert f"the master's mail outbox: {settings.OUTBOX!r} lies inside the image tree" in msg, msg


# --- a compile log line that stalls the reactor ------------------------------------------------------

def test_a_line_of_ld_prefixes_is_read_in_linear_time():
    """The hole: ``ld(\\.bfd)?: .*error`` was searched in every compile log line on the master's reactor
    thread; from each "ld: " the ``.*`` ran to the end of the line and back, so a 4 KiB line (Buildbot
    splits longer ones) of "ld: e" took about 4 ms instead of microseconds: a commit printing 100,000 of
    them held the web UI, the workers and the image server for minutes."""
    line = ("ld: e" * 820)[:4096]  # one line as Buildbot hands it over, no "error" in it
    progress = KbuildProgress()
    t0 = time.perf_counter()
    for _ in range(400):
        assert progress.feed(line) is False
    assert time.perf_counter() - t0 < 0.5  # was about 1.7 s here (4 ms a line); now a few milliseconds
    assert progress.first_error == ""


@pytest.mark.parametrize("line, is_error", [
    ("ld: drivers/gpu/i915.o: error: undefined symbol", True),
    ("x86_64-linux-gnu-ld.bfd: error: cannot find -lfoo", True),
    ("ld: warning: something", False),
    ("main.c:(.text+0x1): undefined reference to `foo'", True),
    ("error ld: before the prefix", False),
    ("ld: " * 50 + "error", True),
    ("  LD      vmlinux", False),
])
def test_linker_errors_are_what_they_were(line, is_error):
    assert linker_error(line) is is_error


def test_a_flood_of_error_lines_keeps_only_the_first_few():
    """Only the first error is ever shown; a build printing a million error lines kept each in memory."""
    progress = KbuildProgress()
    for i in range(5000):
        assert progress.feed(f"drivers/x{i}.c:1:2: error: boom") is True
        assert progress.feed(f"make[{i}]: *** [x] Error 1") is True
    assert progress.first_error == "drivers/x0.c:1:2: error: boom"
    assert len(progress.errors) <= 20 and len(progress._make_errors) <= 20


# --- the Build form's revision ----------------------------------------------------------------------

@pytest.fixture
def revision_field():
    return revision_field_of_the_build_form()


@pytest.mark.parametrize("rev", ["", "18097b2c3d4e", "a" * 40, "v6.1", "drm-tip~3", "HEAD^", "refs/tags/v6.1-rc1"])
def test_the_build_form_takes_a_commit_tag_or_branch(revision_field, rev):
    assert revision_field.getFromKwargs({revision_field.fullName: [rev]}) == rev


@pytest.mark.parametrize("rev", ["--pathspec-from-file=../../../buildbot.tac", "-b", "-", " --orphan=x",
                                 "HEAD\n--x", "HEAD\n", "a b", "x" * 201])
def test_the_build_form_refuses_what_git_reads_as_an_option(revision_field, rev):
    with pytest.raises(ValidationError, match="revision"):
        revision_field.getFromKwargs({revision_field.fullName: [rev]})


# --- machine names -----------------------------------------------------------------------------------

MACHINE = '\n[[machine]]\nname = {name}\ntype = "qemu"\n'


@pytest.mark.parametrize("name", ["vm1 bbk.server=http://10.0.0.66:8011", "vm1\nbbk.server=x", "vm/1", "../vm1",
                                  "-vm1", ".vm1", "x" * 65, ""])
def test_a_machine_name_that_is_not_one_plain_word_is_refused(tmp_path, name):
    """The hole: any non-empty string was a machine name, and the name goes onto the candidate's kernel
    command line as ``bbk.machine=<name>`` before the token: ``vm1 bbk.server=http://10.0.0.66:8011``
    made stage 2 (which takes the last ``bbk.server=``) send its reports and the machine key to that host."""
    text = settings_text(extra=MACHINE.format(name=json.dumps(name)))
    msg = _refused(text, tmp_path / "settings.toml")
    assert ".name: expected a name of letters, digits, '.', '_' and '-'" in msg, msg


@pytest.mark.parametrize("name", ["vm1", "skl-1", "lab2.rack_3", "A" * 64])
def test_plain_machine_names_are_fine(tmp_path, name):
    text = settings_text(extra=MACHINE.format(name=json.dumps(name)))
    assert settings.parse(text, str(tmp_path / "settings.toml")).machines[0].name == name


# --- pages a commit adds to the image tree (publishing them: test_published_files.py) -----------------

def test_files_are_served_with_nosniff(served, tmp_path):
    (tmp_path / "tree" / "config").write_text("<html><script>alert(1)</script>\n")
    with urllib.request.urlopen(f"{served.url}/config", timeout=10) as r:
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Content-Type"].startswith("text/plain")
