"""Buildbot's MailNotifier with a durable outbox (README.md "Notifications", Delivery).

MailNotifier logs a failed delivery and drops the mail. Here every mail is written to the outbox first
and removed once the server accepted it; while the server cannot be reached the outbox is drained again
after a backoff that doubles up to a bound. The SMTP itself stays MailNotifier's (Twisted's client).
"""

from __future__ import annotations

import email
import email.policy

from buildbot.reporters.mail import MailNotifier
from twisted.internet import defer, threads
from twisted.mail.smtp import SMTPDeliveryError
from twisted.python import log

from buildbot_kernel.notify.compose import to_message
from buildbot_kernel.notify.outbox import Outbox


class KernelMailNotifier(MailNotifier):
    """MailNotifier that queues every mail in the outbox first and drains it with a bounded backoff."""

    name = "kernel-mail"
    _failures, _retry_call, _draining, _again = 0, None, False, False  # per instance once set

    def checkConfig(self, fromaddr, outbox_dir=None, retry_first=5.0, retry_max=600.0, **kwargs):
        super().checkConfig(fromaddr, **kwargs)

    @defer.inlineCallbacks
    def reconfigService(self, fromaddr, outbox_dir=None, retry_first=5.0, retry_max=600.0, **kwargs):
        yield super().reconfigService(fromaddr, **kwargs)
        self.outbox = Outbox(outbox_dir)
        self.retry_first, self.retry_max = float(retry_first), float(retry_max)
        if self.running:
            self.kick()

    @defer.inlineCallbacks
    def startService(self):
        yield super().startService()
        self.kick()  # mails queued before a restart

    @defer.inlineCallbacks
    def stopService(self):
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        yield super().stopService()

    @defer.inlineCallbacks
    def sendMessage(self, reports):
        """One mail per report, written to the outbox before any delivery is tried."""
        for report in reports:
            mail = report.get("mail")
            if mail is None:
                continue
            try:
                msg, recipients = to_message(mail, self.fromaddr)
            except ValueError as e:  # a header that would break the mail: said, and the others still go
                log.msg(f"notify: {mail.kind} mail {mail.subject!r} not sent: {e}")
                continue
            if not recipients:
                log.msg(f"notify: {mail.kind} mail {mail.subject!r} has no usable recipient; not sent")
                continue
            entry = yield threads.deferToThread(self.outbox.put, msg.as_string(), recipients)
            log.msg(f"notify: {mail.kind} mail queued as {entry.name} for {', '.join(recipients)}")
        self.kick()

    def kick(self) -> None:
        """Deliver what is queued now (a new mail also cuts a backoff wait short)."""
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self._draining:
            self._again = True
            return
        self._drain().addErrback(log.err, "notify: draining the mail outbox")

    @defer.inlineCallbacks
    def _drain(self):
        self._draining = True
        try:
            while True:
                self._again = False
                entries = yield threads.deferToThread(self.outbox.pending)
                for entry in entries:
                    ok = yield self._deliver(entry)
                    if not ok:
                        self._schedule_retry()
                        return
                self._failures = 0
                if not self._again:
                    return
        finally:
            self._draining = False

    @defer.inlineCallbacks
    def _deliver(self, entry) -> bool:
        msg = email.message_from_string(entry.message, policy=email.policy.default)
        try:
            yield self.sendMail(msg, entry.recipients)
        except Exception as e:  # noqa: BLE001 - every delivery failure is kept, logged and retried
            reason = f"{type(e).__name__}: {e}"
            if isinstance(e, SMTPDeliveryError) and 500 <= (e.code or 0) < 600:
                where = yield threads.deferToThread(self.outbox.refused, entry, reason)
                log.msg(f"notify: the mail server refused {entry.name} for good ({reason}); kept in {where}")
                return True
            yield threads.deferToThread(self.outbox.failed_attempt, entry, reason)
            self._failures += 1
            log.msg(f"notify: cannot deliver {entry.name} through {self.relayhost}:{self.smtpPort} ({reason}); "
                    f"kept in the outbox, attempt {entry.attempts}, next try in {self.retry_delay():g}s")
            return False
        yield threads.deferToThread(self.outbox.delivered, entry)
        log.msg(f"notify: delivered {entry.name} to {', '.join(entry.recipients)}")
        return True

    def retry_delay(self) -> float:
        """Doubling from ``retry_first`` after each failure in a row, never more than ``retry_max``."""
        return min(self.retry_max, self.retry_first * 2 ** max(0, self._failures - 1))

    def _schedule_retry(self) -> None:
        if self.running:  # a stopping master leaves the rest to the next start
            self._retry_call = self.master.reactor.callLater(self.retry_delay(), self.kick)
