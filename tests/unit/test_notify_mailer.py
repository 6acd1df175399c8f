"""The mail reporter's delivery against a real SMTP server (aiosmtpd on loopback), on the real reactor:
a mail waits in the outbox while the server is down and goes out once it is up; a mail the server
refuses for good moves to failed/ and does not block the next one."""

from __future__ import annotations

import email
import email.policy
import shutil
import tempfile

from aiosmtpd.controller import Controller
from twisted.internet import defer
from twisted.trial import unittest

from buildbot_kernel.notify.compose import Mail, to_message
from buildbot_kernel.notify.mailer import KernelMailNotifier
from buildbot_kernel.notify.outbox import Outbox
from tests.integration.harness import free_port

SENDER = "bb@example.org"


class Handler:
    def __init__(self):
        self.received = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((list(envelope.rcpt_tos),
                              email.message_from_bytes(envelope.original_content, policy=email.policy.default)))
        return "250 OK"


def notifier(outbox: Outbox, port: int) -> KernelMailNotifier:
    """The reporter as its reconfigService leaves it, without a master (delivery needs none)."""
    n = KernelMailNotifier.__new__(KernelMailNotifier)
    n.fromaddr, n.relayhost, n.smtpPort = SENDER, "127.0.0.1", port
    n.smtpUser = n.smtpPassword = None
    n.useTls = n.useSmtps = n.dumpMailsToLog = False
    n.outbox, n.retry_first, n.retry_max = outbox, 5.0, 600.0
    n.running = False  # no retry timer: the test drives the drains
    return n


def queue(outbox: Outbox, subject: str, to: str) -> None:
    msg, rcpt = to_message(Mail(subject=subject, body="body\n.\nnot the end\n", to=(to,), kind="culprit"), SENDER)
    outbox.put(msg.as_string(), rcpt)


class DeliveryTest(unittest.TestCase):
    @defer.inlineCallbacks
    def test_down_then_up_and_refused_for_good(self):
        port = free_port()
        state = tempfile.mkdtemp(prefix="bbk-notify-")  # trial's mktemp() would write into the checkout
        self.addCleanup(shutil.rmtree, state, True)
        outbox = Outbox(state)
        n = notifier(outbox, port)
        queue(outbox, "[bisect] first: Jörg's commit", "list@example.org")
        yield n._drain()  # nothing listens on the port
        [kept] = outbox.pending()
        self.assertEqual((kept.attempts, n._failures), (1, 1))
        self.assertIn("SMTPConnectError", kept.last_error)
        self.assertEqual(n.retry_delay(), 5.0)

        handler = Handler()
        server = Controller(handler, hostname="127.0.0.1", port=port)
        server.start()
        self.addCleanup(server.stop)
        queue(outbox, "refused", "nobody@example.org")
        queue(outbox, "third", "list@example.org")
        yield n._drain()
        self.assertEqual(outbox.pending(), [])
        self.assertEqual(n._failures, 0)
        self.assertEqual([(rcpt, str(m["Subject"])) for rcpt, m in handler.received],
                         [(["list@example.org"], "[bisect] first: Jörg's commit"), (["list@example.org"], "third")])
        self.assertEqual(handler.received[0][1].get_content().replace("\r\n", "\n"), "body\n.\nnot the end\n")
        [refused] = (outbox.dir / "failed").iterdir()
        self.assertIn("550", refused.read_text())
