"""The regression watch on a QEMU test machine with the real tiny kernel: the setup the e2e test
(tests/farm/test_loop_e2e.py) and bench/bench_loop.py share, so the test proves what the bench times.

A real master and worker build the prepared linux tree (tinyconfig + configs/qemu-small.config) of the
watched branch; a ``[[test]]`` of mode ``boot`` runs every new image on the QEMU machine ``vm1`` through
the two-stage kexec boot; the master mails through Buildbot's mail reporter to an SMTP server in this
process.  The history comes from tests/farm/planted_history.py::

    C0 (pushed first: built, booted, passes) - C1 - ... - C<panic_at>(PANIC) - ... - C<count> (the bad head)

:meth:`LoopFarm.start` pushes C0 and waits for its passing test; :meth:`LoopFarm.push_bad_head` pushes
C<count>.  Nobody fills a form from there on: the master builds the head, boots it (a panic resets the
machine into stage 1: a boot failure, ``bad`` in mode ``boot``), re-runs it, bisects, verifies the
culprit and mails it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from integration.harness import Master, Worker, free_port, settings_text, wait_for
from integration.smtp_inbox import smtp_server
from realkernel import kbuild_helper

from .planted_history import make_history, push

BRANCH = "linux-6.1.y"
TEST = "boot"
SENDER, LIST = "buildbot-kernel@example.org", "kernel-ci@example.org"
WEB_URL = "https://git.example.org/linux/commit/{sha}"
CONFIG = kbuild_helper.REPO / "configs" / "qemu-small.config"
# a TCG boot on a loaded 2-core machine is slow: the timeouts only bound a hang, a panic resets at once
MACHINE = """
[[machine]]
name = "vm1"
type = "qemu"
memory = 512
boot_timeout = 180
test_timeout = 120
retries = {retries}
poll = 1
cmdline = "console=ttyS0 panic=-1"
"""
WATCH = f"""
[[test]]
name = "{TEST}"
command = "true"
mode = "boot"
branches = ["{BRANCH}"]
testers = ["vm1"]
"""
NOTIFY = f"""
[notify]
smtp = "127.0.0.1:{{smtp_port}}"
from = "{SENDER}"
to = ["{LIST}"]
events = ["build-failed", "regression", "culprit"]
cc_culprit = true
"""


def unavailable() -> str | None:
    """Why a real kernel cannot be built and booted here, or None."""
    if kbuild_helper.source_tarball() is None:
        return "Debian package linux-source-6.1 is not installed (scripts/install-deps installs it)"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (scripts/install-deps)"
    return None


def prepared_tree() -> Path:
    return kbuild_helper.prepare_tree(kbuild_helper.DEFAULT_TREE)


def farm_settings(upstream: Path, ports: dict, extra: str, poll: int = 2) -> str:
    """settings.toml of a master building the real tree's tiny kernel on :data:`BRANCH`."""
    return settings_text(str(upstream), [BRANCH], ports, extra=extra, poll=poll).replace(
        'config = "defconfig"\n', f'config = "tinyconfig"\nfragments = ["{CONFIG}"]\n')


def qemu_pids(console) -> list[int]:
    """The QEMU processes writing this console log."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"qemu-system" in cmdline and str(console).encode() in cmdline:
            pids.append(int(pid))
    return pids


def qemu_running(console) -> bool:
    """A QEMU process writing this console log is alive."""
    return bool(qemu_pids(console))


@pytest.fixture(scope="module")
def linux_tree():
    """The prepared linux tree (scripts/prepare-linux-tree); skips saying what is missing."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    return prepared_tree()


def images(master) -> dict[str, dict]:
    """Image name -> metadata, of the branch's image tree."""
    d = master.dir / "images" / BRANCH
    metas = [json.loads(m.read_text()) for m in d.glob("*/metadata.json")] if d.is_dir() else []
    return {m["name"]: m for m in metas}


def image_shas(master) -> set[str]:
    return {m["sha"] for m in images(master).values()}


def entries(master) -> list[dict]:
    """The branch's index.json entries (with their ``tests``)."""
    p = master.dir / "images" / BRANCH / "index.json"
    return json.loads(p.read_text())["images"] if p.is_file() else []


def watch_result(master, sha: str) -> dict:
    """The watched test's result document of the image of ``sha`` ({} while untested)."""
    return next(((e.get("tests") or {}).get(TEST) or {} for e in entries(master) if e["sha"] == sha), {})


def watch_bisects(master) -> list[dict]:
    """Bisect builds the regression watch started (their owner says so)."""
    return [b for b in master.builds("bisect")
            if b["properties"].get("owner", [""])[0].startswith(f"regression-watch: {TEST} on {BRANCH} (")]


def bisect_result(master, build) -> dict:
    d = master.dir / "state" / "bisects" / build["properties"]["bisect_id"][0]
    return json.loads((d / "result.json").read_text())


@dataclass
class LoopFarm:
    """One master + worker + SMTP server over a fresh shared clone of the prepared tree."""

    base: Path
    tree: Path
    count: int
    panic_at: int
    retries: int = 0
    shas: list[str] = field(default_factory=list)
    pushed_at: float = 0.0  # time.time() of the bad head's push
    console_offset: int = 0  # bytes of the machine's console log before that push
    master: Master | None = None
    worker: Worker | None = None
    smtp: object = None  # aiosmtpd's Controller

    def start(self, timeout: float = 1200) -> None:
        """Master, worker and mail server up; C0 built and its boot test passed (the regression watch
        needs a pass before it can see a regression)."""
        self.upstream = self.base / "linux.git"
        subprocess.run(["git", "clone", "-q", "--shared", "--bare", str(self.tree), str(self.upstream)], check=True)
        self.work = self.base / "dev"
        self.shas = make_history(self.upstream, self.work, BRANCH, self.count, {self.panic_at: "panic"})
        push(self.work, self.shas[0], BRANCH)
        ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
        smtp_port = free_port()
        extra = MACHINE.format(retries=self.retries) + WATCH + NOTIFY.format(smtp_port=smtp_port)
        text = farm_settings(self.upstream, ports, extra).replace(
            'build = "x86_64"\n[[build]]', f'build = "x86_64"\nweb_url = "{WEB_URL}"\n[[build]]', 1)
        self.master = Master(self.base, text)
        self.worker = Worker(self.base, "w1", "pw", ports["worker"])
        self.smtp, self.inbox = smtp_server(smtp_port)
        self.smtp.start()
        self.master.start(ports["web"])
        self.worker.start()
        wait_for(lambda: watch_result(self.master, self.shas[0]).get("result"), timeout,
                 "C0's image to be built and booted")
        assert watch_result(self.master, self.shas[0])["result"] == "pass", watch_result(self.master, self.shas[0])
        wait_for(self.master.idle, 120, "the master to be idle")

    @property
    def console(self) -> Path:
        return self.master.dir / "state" / "farm" / "qemu" / "vm1.console.log"

    def push_bad_head(self) -> None:
        self.console_offset = self.console.stat().st_size if self.console.exists() else 0
        self.pushed_at = time.time()
        push(self.work, self.shas[self.count], BRANCH)

    def culprit_mail(self, timeout: float) -> dict:
        """The first culprit mail (or flaky / not verified: the same event)."""
        return wait_for(lambda: self.inbox.of_kind("culprit"), timeout, "the culprit mail")[0]

    def boots(self, release: str) -> tuple[int, int]:
        """(candidate kernels, stage-1 kernels) that started on the machine since the push, counted from
        its console log: every boot prints its ``Linux version``; ``release`` is stage 1's."""
        with open(self.console, "rb") as f:
            f.seek(self.console_offset)
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if "Linux version " in ln]
        stage1 = sum(1 for ln in lines if f"Linux version {release} " in ln)
        return len(lines) - stage1, stage1

    def stop(self) -> None:
        """Whatever :meth:`start` got to start."""
        for what, stop in (("worker", lambda w: w.stop()), ("master", lambda m: m.stop()),
                           ("smtp", lambda s: s.stop(no_assert=True))):
            if getattr(self, what, None) is not None:
                stop(getattr(self, what))
