"""A real SMTP server in the test process (aiosmtpd, on loopback) and what it received.

Shared by the notification tests (tests/integration/test_notify.py), the QEMU loop e2e test and its
benchmark (tests/farm/loop_farm.py): every mail a master sends goes through Buildbot's own mail reporter
to this server, never to a stub.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time

from aiosmtpd.controller import Controller


class Inbox:
    """aiosmtpd handler: every message the server accepted, with its envelope and arrival time (epoch
    seconds, as Buildbot dates its builds)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received: list[dict] = []

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.received.append({"rcpt": list(envelope.rcpt_tos), "mail_from": envelope.mail_from,
                                  "at": time.time(),
                                  "msg": email.message_from_bytes(envelope.original_content,
                                                                  policy=email.policy.default)})
        return "250 OK"

    def of_kind(self, kind: str) -> list[dict]:
        with self.lock:
            return [m for m in self.received if m["msg"]["X-Buildbot-Kernel"] == kind]


def smtp_server(port: int) -> tuple[Controller, Inbox]:
    """An SMTP server on 127.0.0.1:``port`` (not started: ``.start()``, ``.stop(no_assert=True)``)."""
    inbox = Inbox()
    return Controller(inbox, hostname="127.0.0.1", port=port), inbox


def body_of(mail: dict) -> str:
    """The text of a received mail with plain newlines (SMTP lines end in CRLF)."""
    return mail["msg"].get_content().replace("\r\n", "\n")
