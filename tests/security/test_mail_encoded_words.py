"""A commit subject or author written as RFC 2047 encoded words must not add headers or a body to our mails.

``=?utf-8?q?=0D=0AReply-To:_x?=`` has no control character, so flattening control characters let it
through; Python's email package decoded it when the header was set and wrote the CR LF it carries.  The
mails go through the real reporter, outbox and a real SMTP server on loopback, and are read back as a
mail client reads them.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import tempfile

import pytest
from aiosmtpd.controller import Controller
from twisted.internet import defer
from twisted.trial import unittest

from buildbot_kernel.notify import compose
from buildbot_kernel.notify.compose import Mail, to_message
from buildbot_kernel.notify.outbox import Outbox
from tests.integration.harness import free_port
from tests.unit.test_notify_mailer import SENDER, Handler, notifier

INJECTED = "=?utf-8?q?=0D=0AReply-To:_attacker@evil.org=0D=0AContent-Type:_text/html=0D=0A=0D=0A<h1>click</h1>?="
CASES = {
    "subject": Mail(subject=f"[bisect] first bad commit: drm/i915: fix {INJECTED}", body="real body\n",
                    to=("dev@example.org",), kind="culprit"),
    "author name": Mail(subject="s", body="real body\n", to=("dev@example.org",),
                        cc=("=?utf-8?q?A=0D=0AX-Evil=3A_1?= <author@example.org>",), kind="culprit"),
    "author address": Mail(subject="s", body="real body\n", to=("dev@example.org",),
                           cc=("x <=?utf-8?q?a=0D=0AX-Evil=3A_1?=@example.org>",), kind="culprit"),
}


def read_back(mail: Mail) -> email.message.EmailMessage:
    msg, _ = to_message(mail, SENDER)
    return email.message_from_string(msg.as_string(), policy=email.policy.default)


@pytest.mark.parametrize("case", CASES)
def test_encoded_words_add_no_header_and_keep_the_body(case):
    back = read_back(CASES[case])
    assert back["Reply-To"] is None and back["X-Evil"] is None
    assert back.get_content_type() == "text/plain"
    assert back.get_content().replace("\r\n", "\n") == "real body\n"
    assert set(back.keys()) == {"From", "To", "Subject", "Date", "Message-ID", "X-Buildbot-Kernel",
                                "Content-Type", "Content-Transfer-Encoding", "MIME-Version"} | (
        {"Cc"} if case == "author name" else set())


def test_the_subject_still_says_what_the_commit_says():
    back = read_back(CASES["subject"])
    assert str(back["Subject"]).startswith("[bisect] first bad commit: drm/i915: fix = ?utf-8?q?=0D=0AReply-To:")


def test_an_address_holding_an_encoded_word_is_no_address():
    assert compose.parse_address("x <=?utf-8?q?a?=@example.org>") is None
    assert compose.address_problem("=?utf-8?q?a?=@example.org")


def test_a_header_that_would_still_break_is_refused(monkeypatch):
    """The second layer: whatever gets past header_text, the finished message is checked."""
    monkeypatch.setattr(compose, "header_text", lambda text, limit=0: str(text))
    with pytest.raises(ValueError, match="Subject"):
        to_message(CASES["subject"], SENDER)


class DeliveredTest(unittest.TestCase):
    def smtp_and_notifier(self) -> tuple[Handler, object]:
        """A real SMTP server on loopback and the reporter delivering to it from an outbox of its own."""
        port = free_port()
        handler = Handler()
        server = Controller(handler, hostname="127.0.0.1", port=port)
        server.start()
        self.addCleanup(server.stop)
        state = tempfile.mkdtemp(prefix="bbk-notify-")
        self.addCleanup(shutil.rmtree, state, True)
        n = notifier(Outbox(state), port)
        self.patch(n, "kick", lambda: None)  # the test drains once, itself
        return handler, n

    @defer.inlineCallbacks
    def test_what_the_smtp_server_receives(self):
        """The reporter's own path: the mail queued in the outbox and delivered to a real SMTP server."""
        handler, n = self.smtp_and_notifier()
        yield n.sendMessage([{"mail": m} for m in CASES.values()])
        yield n._drain()
        self.assertEqual(len(handler.received), 3)
        for _rcpt, msg in handler.received:
            self.assertIsNone(msg["Reply-To"])
            self.assertIsNone(msg["X-Evil"])
            self.assertEqual(msg.get_content().replace("\r\n", "\n"), "real body\n")
        self.assertEqual(sorted(r for rcpt, _ in handler.received for r in rcpt),
                         ["author@example.org", "dev@example.org", "dev@example.org", "dev@example.org"])

    @defer.inlineCallbacks
    def test_a_mail_that_cannot_be_written_does_not_stop_the_others(self):
        handler, n = self.smtp_and_notifier()
        self.patch(compose, "header_text", lambda text, limit=0: str(text))
        good = Mail(subject="fine", body="b\n", to=("dev@example.org",), kind="culprit")
        yield n.sendMessage([{"mail": CASES["subject"]}, {"mail": good}])
        yield n._drain()
        self.assertEqual([str(m["Subject"]) for _, m in handler.received], ["fine"])
