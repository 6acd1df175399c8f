"""The Buildbot glue of notifications: generators, formatters and the mail reporter (README.md
"Notifications").

Buildbot's reporters framework does the listening (finished builds) and the SMTP (its MailNotifier and
Twisted's ESMTP client); this module decides which builds are worth a mail and what it says
(:mod:`texts`), and adds what MailNotifier lacks: a failed delivery is kept in a durable outbox and
retried with a bounded backoff, instead of being logged and dropped.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from buildbot import interfaces
from buildbot import util as bbutil
from buildbot.process.results import FAILURE
from buildbot.reporters import utils
from buildbot.reporters.mail import MailNotifier
from buildbot.reporters.message import MessageFormatterBase
from twisted.internet import defer, threads
from twisted.mail.smtp import SMTPDeliveryError
from twisted.python import log
from zope.interface import implementer

from buildbot_kernel import gitrepo, settings
from buildbot_kernel.bisect import records
from buildbot_kernel.bisect.mirror import mirror_path
from buildbot_kernel.bisect.tree_images import TreeImages
from buildbot_kernel.master.bisect_config import BISECT_BUILDER
from buildbot_kernel.notify import texts
from buildbot_kernel.notify.compose import Mail, looks_like_address, split_hostport, to_message
from buildbot_kernel.notify.outbox import Outbox

ERRORS_LOG = "errors"  # the compile step's log of error lines (steps/kernel.py)
_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")


@dataclass(frozen=True)
class NotifyContext:
    """What the settings tell every formatter."""

    sender: str
    to: tuple[str, ...]
    events: tuple[str, ...]
    cc_culprit: bool
    state_dir: str
    images_root: str
    base_url: str
    web_urls: dict = field(default_factory=dict)  # repository name -> [[repository]] web_url
    builds: dict = field(default_factory=dict)  # build config name -> its [[build]] table


def prop(build: Mapping, name: str, default=None):
    value = (build.get("properties") or {}).get(name)
    return value[0] if isinstance(value, (list, tuple)) and value else default


# --- formatters: a build dict (with properties) -> a Mail, or None for no mail ---------------------
class _KernelFormatter(MessageFormatterBase):
    """Our formatters return the whole :class:`Mail` (recipients included) next to Buildbot's fields."""

    compare_attrs: ClassVar = ["ctx"]

    def __init__(self, ctx: NotifyContext):
        super().__init__(want_properties=True)
        self.ctx = ctx

    @defer.inlineCallbacks
    def format_message_for_build(self, master, build, **kwargs):
        mail = yield self.mail_for_build(master, build)
        if mail is None:
            return None
        return {"body": mail.body, "subject": mail.subject, "type": "plain", "extra_info": None, "mail": mail}

    def format_message_for_buildset(self, master, buildset, builds, **kwargs):
        raise NotImplementedError("notifications are per build")

    def mail_for_build(self, master, build):
        raise NotImplementedError


class BuildFailedFormatter(_KernelFormatter):
    """A failed branch build: the first compiler error and the log's URL. A build a bisect asked for is
    not a branch breakage (its failure is a skip in that bisect), so it is not mailed."""

    @defer.inlineCallbacks
    def mail_for_build(self, master, build):
        if build["results"] != FAILURE or prop(build, "bisect_id"):
            return None
        steps = yield master.data.get(("builds", build["buildid"], "steps"))
        failed = next((s for s in steps if s["results"] == FAILURE), None)
        if failed is None:
            return None
        # the step summary holds the first error with the worker's directory taken out (steps/kernel.py);
        # the errors log, the raw lines, is the fallback
        state = failed.get("state_string") or ""
        first_error = state.removeprefix("failed: ") if state.startswith("failed: ") else ""
        urls = {}
        logs = yield master.data.get(("steps", failed["stepid"], "logs"))
        for lg in logs:
            urls[lg["name"]] = utils.get_url_for_log(master, build["builderid"], build["number"],
                                                     failed["number"], lg["slug"])
            if lg["name"] == ERRORS_LOG and not first_error:
                content = yield master.data.get(("logs", lg["logid"], "contents"))
                lines = ((content or {}).get("content") or "").splitlines()
                if lg.get("type") == "s":  # stream logs: each line starts with its channel (o, e, h)
                    lines = [line[1:] for line in lines if line[:1] in "oe"]
                first_error = next((line for line in lines if line.strip()), "")
        first_error = first_error or state
        repository = prop(build, "project") or ""
        return texts.build_failed_mail(
            repository=repository, branch=prop(build, "branch") or build["builder"]["name"],
            sha=prop(build, "got_revision") or prop(build, "revision") or "", failed_step=failed["name"],
            first_error=first_error, errors_url=urls.get(ERRORS_LOG, ""),
            log_url=urls.get("stdio", next(iter(urls.values()), "")), build_url=build["url"],
            web_url=self.ctx.web_urls.get(repository, ""), to=self.ctx.to)


class RegressionFormatter(_KernelFormatter):
    """Any build carrying the ``regression`` property (set by the regression watch) is one mail."""

    def mail_for_build(self, master, build):
        reg = texts.parse_regression(prop(build, "regression"))
        if reg is None:
            return None
        return texts.regression_mail(reg, build_url=build["url"], to=self.ctx.to,
                                     web_url=self.ctx.web_urls.get(reg["repository"], ""))


class BisectFormatter(_KernelFormatter):
    """A finished bisect: the culprit mail (verified culprits only), a flaky mail, or, for a bisect a
    person started, its result to that person."""

    @defer.inlineCallbacks
    def mail_for_build(self, master, build):
        ident = prop(build, "bisect_id")
        if not ident:
            return None
        facts = yield threads.deferToThread(self._read, str(ident))
        if facts is None:
            return None
        return bisect_mail(self.ctx, facts["result"], bisect_log=facts["log"], build_url=build["url"],
                           owner=prop(build, "owner"), committer=facts["committer"], compiler=facts["compiler"])

    def _read(self, ident: str) -> dict | None:
        """result.json, the bisect log, the culprit's committer and compiler (blocking)."""
        try:
            bdir = records.BisectDir(self.ctx.state_dir, ident)
            result = json.loads(bdir.file(records.RESULT).read_text(encoding="utf-8"))
            bisect_log = bdir.file(records.LOG).read_text(encoding="utf-8", errors="replace")
        except (OSError, ValueError) as e:
            log.msg(f"notify: bisect {ident}: no result to mail ({e})")
            return None
        if not isinstance(result, dict) or not isinstance(result.get("request"), dict):
            return None
        fb = result.get("first_bad") or {}
        req = result["request"]
        committer, compiler = "", ""
        if isinstance(fb, dict) and _SHA.match(str(fb.get("sha", ""))):
            committer = _committer(self.ctx.state_dir, str(req.get("repository", "")), fb["sha"])
            compiler = _compiler(self.ctx, str(req.get("repository", "")), fb["sha"],
                                 str(req.get("build_config", "")))
        return {"result": result, "log": bisect_log, "committer": committer, "compiler": compiler}


def _committer(state_dir: str, repository: str, sha: str) -> str:
    try:
        return gitrepo.Repo(mirror_path(state_dir, repository)).run(
            "show", "-s", "--format=%cn <%ce>", "--end-of-options", sha, "--")[1].strip()
    except (gitrepo.GitError, OSError):
        return ""


def _compiler(ctx: NotifyContext, repository: str, sha: str, build_config: str) -> str:
    try:
        image = TreeImages(ctx.images_root, ctx.base_url, repository=repository).index().lookup(sha, build_config)
    except Exception as e:  # noqa: BLE001 - an unreadable tree only loses the compiler line of the mail
        log.msg(f"notify: cannot read the image tree for the compiler of {sha[:12]}: {e}")
        return ""
    return str(image.metadata.get("compiler") or "") if image else ""


def bisect_mail(ctx: NotifyContext, result: Mapping, *, bisect_log: str, build_url: str, owner=None,
                committer: str = "", compiler: str = "") -> Mail | None:
    """Which mail a finished bisect gets, and to whom (pure)."""
    req = result["request"]
    starter = [owner] if looks_like_address(owner) else []
    if texts.is_flaky(result):
        return texts.flaky_mail(result, bisect_log=bisect_log, build_url=build_url, to=(*ctx.to, *starter))
    if result.get("status") == "done" and result.get("first_bad"):
        cc = [result["first_bad"].get("author"), committer] if ctx.cc_culprit else []
        return texts.culprit_mail(result, bisect_log=bisect_log, build_url=build_url, sender=ctx.sender,
                                  base_url=ctx.base_url, web_url=ctx.web_urls.get(req.get("repository"), ""),
                                  build=ctx.builds.get(req.get("build_config")), compiler=compiler,
                                  to=(*ctx.to, *starter), cc=[c for c in cc if c])
    if starter:
        return texts.bisect_result_mail(result, build_url=build_url, to=starter)
    return None


# --- generator -----------------------------------------------------------------------------------
@implementer(interfaces.IReportGenerator)
class KernelMailGenerator(bbutil.ComparableMixin):
    """Finished builds of ``builders`` (None: every builder) through one of our formatters."""

    wanted_event_keys: ClassVar = [("builds", None, "finished")]
    compare_attrs: ClassVar = ["event", "builders", "formatter"]

    def __init__(self, event: str, formatter: _KernelFormatter, builders: list[str] | None = None):
        self.event = event
        self.formatter = formatter
        self.builders = builders

    def check(self):
        pass

    def generate_name(self) -> str:
        return f"{type(self).__name__}_{self.event}"

    @defer.inlineCallbacks
    def generate(self, master, reporter, key, build):
        yield utils.getDetailsForBuild(master, build, want_properties=True)
        if self.builders is not None and build["builder"]["name"] not in self.builders:
            return None
        msg = yield self.formatter.format_message_for_build(master, build)
        if msg is None:
            return None
        return {"body": msg["body"], "subject": msg["subject"], "type": "plain", "results": build["results"],
                "builds": [build], "buildset": build["buildset"], "users": [], "patches": [], "logs": [],
                "extra_info": None, "mail": msg["mail"]}


# --- the reporter ----------------------------------------------------------------------------------
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
            msg, recipients = to_message(mail, self.fromaddr)
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
        self._retry_call = self.master.reactor.callLater(self.retry_delay(), self.kick)


def notify_services(s: settings.Settings, state_dir: str, images_root: str, branch_builders: list[str]) -> list:
    """The mail reporter for ``[notify]``, or nothing when the section is absent."""
    n = s.notify
    if not n:
        return []
    password = None
    if n["password_file"]:
        password = settings.resolve(s, n["password_file"]).read_text(encoding="utf-8").strip()
    host, port = split_hostport(n["smtp"])
    ctx = NotifyContext(sender=n["from"], to=tuple(n["to"]), events=tuple(n["events"]), cc_culprit=n["cc_culprit"],
                        state_dir=state_dir, images_root=images_root, base_url=s.images["base_url"],
                        web_urls={r["name"]: r.get("web_url", "") for r in s.repositories},
                        builds={b["name"]: b for b in s.builds})
    generators = []
    if "build-failed" in ctx.events:
        generators.append(KernelMailGenerator("build-failed", BuildFailedFormatter(ctx), list(branch_builders)))
    if "regression" in ctx.events:
        generators.append(KernelMailGenerator("regression", RegressionFormatter(ctx)))
    if "culprit" in ctx.events:
        generators.append(KernelMailGenerator("culprit", BisectFormatter(ctx), [BISECT_BUILDER]))
    if not generators:
        return []
    return [KernelMailNotifier(fromaddr=n["from"], relayhost=host, smtpPort=port, useTls=n["starttls"],
                               smtpUser=n["user"] or None, smtpPassword=password, sendToInterestedUsers=False,
                               generators=generators, outbox_dir=state_dir)]
