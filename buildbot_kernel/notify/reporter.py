"""The Buildbot wiring of notifications: one generator per event and the mail reporter built from
``[notify]`` (README.md "Notifications").

Buildbot's reporters framework does the listening (finished builds) and the SMTP (its MailNotifier and
Twisted's ESMTP client); :mod:`formatters` decides which builds are worth a mail, :mod:`mailer` keeps
a mail until the server took it.
"""

from __future__ import annotations

from typing import ClassVar

from buildbot import interfaces
from buildbot import util as bbutil
from buildbot.reporters import utils
from twisted.internet import defer
from zope.interface import implementer

from buildbot_kernel import settings
from buildbot_kernel.master.bisect_config import BISECT_BUILDER
from buildbot_kernel.notify.compose import split_hostport
from buildbot_kernel.notify.formatters import (
    BisectFormatter,
    BuildFailedFormatter,
    KernelFormatter,
    NotifyContext,
    RegressionFormatter,
)
from buildbot_kernel.notify.mailer import KernelMailNotifier


@implementer(interfaces.IReportGenerator)
class KernelMailGenerator(bbutil.ComparableMixin):
    """Finished builds of ``builders`` (None: every builder) through one of our formatters."""

    wanted_event_keys: ClassVar = [("builds", None, "finished")]
    compare_attrs: ClassVar = ["event", "builders", "formatter"]

    def __init__(self, event: str, formatter: KernelFormatter, builders: list[str] | None = None):
        self.event = event
        self.formatter = formatter
        self.builders = builders

    def check(self):
        pass

    def generate_name(self) -> str:
        return f"{type(self).__name__}_{self.event}"

    @defer.inlineCallbacks
    def generate(self, master, reporter, key, build):
        if build.get("masterid") not in (None, master.masterid):
            return None  # several masters all hear of every build: the one that ran it sends the mail
        yield utils.getDetailsForBuild(master, build, want_properties=True)
        if self.builders is not None and build["builder"]["name"] not in self.builders:
            return None
        msg = yield self.formatter.format_message_for_build(master, build)
        if msg is None:
            return None
        return {"body": msg["body"], "subject": msg["subject"], "type": "plain", "results": build["results"],
                "builds": [build], "buildset": build["buildset"], "users": [], "patches": [], "logs": [],
                "extra_info": None, "mail": msg["mail"]}


def notify_services(s: settings.Settings, state_dir: str, images_root: str, branch_builders: list[str],
                    outbox_dir: str | None = None) -> list:
    """The mail reporter for ``[notify]``, or nothing when the section is absent.  ``outbox_dir``: this
    master's own (default: ``state_dir``), so that masters sharing ``state_dir`` never send a mail twice."""
    n = s.notify
    if not n:
        return []
    password = None
    if n.password_file:
        password = settings.resolve(s, n.password_file).read_text(encoding="utf-8").strip()
    host, port = split_hostport(n.smtp)
    ctx = NotifyContext(sender=n.from_, to=n.to, events=n.events, cc_culprit=n.cc_culprit,
                        state_dir=state_dir, images_root=images_root, base_url=s.images.base_url,
                        web_urls={r.name: r.web_url for r in s.repositories},
                        builds={b.name: b for b in s.builds})
    generators = []
    if "build-failed" in ctx.events:
        generators.append(KernelMailGenerator("build-failed", BuildFailedFormatter(ctx), list(branch_builders)))
    if "regression" in ctx.events:
        generators.append(KernelMailGenerator("regression", RegressionFormatter(ctx)))
    if "culprit" in ctx.events:
        generators.append(KernelMailGenerator("culprit", BisectFormatter(ctx), [BISECT_BUILDER]))
    if not generators:
        return []
    return [KernelMailNotifier(fromaddr=n.from_, relayhost=host, smtpPort=port, useTls=n.starttls,
                               smtpUser=n.user or None, smtpPassword=password, sendToInterestedUsers=False,
                               generators=generators, outbox_dir=outbox_dir or state_dir)]
