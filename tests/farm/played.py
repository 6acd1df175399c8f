"""A lab ("remote") test machine played by a thread of the test: the requests its stage 1 and stage 2
send, over real HTTP to the master's ``/machines/<name>/``, without QEMU (docs/farm-protocol.md)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from buildbot_kernel.farm import instructions as ins
from buildbot_kernel.farm.testing import http_post as post


def always_good(instructions: dict) -> str:
    return "good"


class PlayedMachine(threading.Thread):
    """Polls ``url/boot`` every 0.3 s; boots what it is told (reports kexec, running and the test's
    result, ``verdict(instructions)``, with the image's name as uname) and reboots into stage 1 when told
    REBOOT; records the answers.  A master that is down (connection refused) is polled again, as a real
    machine's stage 1 does."""

    def __init__(self, url: str, key: str, verdict: Callable[[dict], str] = always_good):
        super().__init__(daemon=True)
        self.url, self.key, self.verdict = url, key, verdict
        self.stage, self.booted, self.answers, self.polls = "2", [], [], 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.3):
            try:
                self._poll()
            except OSError:  # the master is down or restarting
                continue

    def _poll(self):
        code, body = post(f"{self.url}/boot", {"stage": self.stage}, key=self.key)
        self.polls += 1
        b = ins.parse(body) if code == 200 else {}
        self.answers.append((self.stage, body))
        if b.get("REBOOT") and self.stage == "2":
            self.stage = "1"
        elif b.get("KERNEL_URL"):
            for result in ("kexec", "running", self.verdict(b)):
                post(f"{self.url}/report", {"result": result, "token": b["TOKEN"], "uname": b["NAME"],
                                            "stage": "2"}, key=self.key)
            self.booted.append(b["NAME"])
            self.stage = "2"
