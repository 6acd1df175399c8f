"""Our formatters for Buildbot's reporters: which finished build is worth which mail (README.md
"Notifications"). Each returns the whole :class:`Mail`, recipients included; :mod:`texts` says what it says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from buildbot.process.results import FAILURE
from buildbot.reporters import utils
from buildbot.reporters.message import MessageFormatterBase
from twisted.internet import defer, threads
from twisted.python import log

from buildbot_kernel import buildbot_adapter as bb
from buildbot_kernel import gitrepo
from buildbot_kernel.bisect import records
from buildbot_kernel.bisect.mirror import mirror_path
from buildbot_kernel.bisect.tree_images import TreeImages
from buildbot_kernel.notify import texts
from buildbot_kernel.notify.compose import Mail, looks_like_address

ERRORS_LOG = "errors"  # the compile step's log of error lines (steps/kernel.py)
_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?\Z")


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
    builds: dict = field(default_factory=dict)  # build config name -> its [[build]] (settings.Build)


def prop(build: Mapping, name: str, default=None):
    value = (build.get("properties") or {}).get(name)
    return value[0] if isinstance(value, (list, tuple)) and value else default


# --- formatters: a build dict (with properties) -> a Mail, or None for no mail ---------------------
class KernelFormatter(MessageFormatterBase):
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


class BuildFailedFormatter(KernelFormatter):
    """A failed branch build: the first compiler error and the log's URL. A build a bisect asked for is
    not a branch breakage (its failure is a skip in that bisect), so it is not mailed."""

    @defer.inlineCallbacks
    def mail_for_build(self, master, build):
        if build["results"] != FAILURE or prop(build, "bisect_id"):
            return None
        steps = yield bb.build_steps(master, build["buildid"])
        failed = next((s for s in steps if s["results"] == FAILURE), None)
        if failed is None:
            return None
        # the step summary holds the first error with the worker's directory taken out (steps/kernel.py);
        # the errors log, the raw lines, is the fallback
        state = failed.get("state_string") or ""
        first_error = state.removeprefix("failed: ") if state.startswith("failed: ") else ""
        urls = {}
        logs = yield bb.step_logs(master, failed["stepid"])
        for lg in logs:
            urls[lg["name"]] = utils.get_url_for_log(master, build["builderid"], build["number"],
                                                     failed["number"], lg["slug"])
            if lg["name"] == ERRORS_LOG and not first_error:
                lines = yield bb.log_lines(master, lg, channels="oe")
                first_error = next((line for line in lines if line.strip()), "")
        first_error = first_error or state
        repository = prop(build, "project") or ""
        return texts.build_failed_mail(
            repository=repository, branch=prop(build, "branch") or build["builder"]["name"],
            sha=prop(build, "got_revision") or prop(build, "revision") or "", failed_step=failed["name"],
            first_error=first_error, errors_url=urls.get(ERRORS_LOG, ""),
            log_url=urls.get("stdio", next(iter(urls.values()), "")), build_url=build["url"],
            web_url=self.ctx.web_urls.get(repository, ""), to=self.ctx.to)


class RegressionFormatter(KernelFormatter):
    """Any build carrying the ``regression`` property (set by the regression watch) is one mail."""

    def mail_for_build(self, master, build):
        reg = texts.parse_regression(prop(build, "regression"))
        if reg is None:
            return None
        bisect_url = utils.getURLForBuildrequest(master, reg["bisect_requests"][0]) if reg["bisect_requests"] else ""
        return texts.regression_mail(reg, build_url=build["url"], to=self.ctx.to, bisect_url=bisect_url,
                                     web_url=self.ctx.web_urls.get(reg["repository"], ""))


class BisectFormatter(KernelFormatter):
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
