"""Master-side step between upload and publish: the image's build log and reproducer (docs/index-format.md).

The build log is taken on the master from the compile step's log, not tee'd on the worker: the worker's
command stays a plain ``make`` (its exit status and the live progress need no pipe), the log is exactly
what the UI shows, and nothing extra crosses the connection.  Both files go into the upload directory,
so publish hashes them into metadata.json like every other file.
"""

from __future__ import annotations

import lzma
from pathlib import Path

from buildbot.process import buildstep
from buildbot.process.results import FAILURE, SUCCESS
from twisted.internet import defer, threads

from buildbot_kernel import buildbot_adapter as bb
from buildbot_kernel import reproducer
from buildbot_kernel.target import BuildTarget

BUILD_LOG = "build.log.xz"
COMPILE_STEP = "compile"
REPRODUCER_PROPERTY = "reproducer"


def write_build_log(incoming: Path, text: str) -> int:
    """xz the log into the image directory; returns the compressed size."""
    data = lzma.compress(text.encode("utf-8", "surrogateescape"), preset=6)
    (incoming / BUILD_LOG).write_bytes(data)
    return len(data)


def write_reproducer(incoming: Path, build: dict, base_config: Path | None, fragments: list[Path],
                     **fields) -> None:
    script = reproducer.script(build, base_config=base_config.read_bytes() if base_config else None,
                               fragments=[f.read_bytes() for f in fragments], **fields)
    path = incoming / reproducer.FILE
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)


class AttachBuildRecord(buildstep.BuildStep):
    name = "build-record"
    haltOnFailure = True

    def __init__(self, target: BuildTarget, base_config: Path | None, fragments: list[Path], **kwargs):
        self.target = target
        self.base_config = base_config
        self.fragments = list(fragments)
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        p, t = self.getProperty, self.target
        incoming = Path(p("incoming_dir"))
        log = yield bb.step_raw_log(self.master, self.build.buildid, COMPILE_STEP, "stdio")
        if log is None:
            yield self.addCompleteLog("problems", f"the {COMPILE_STEP} step's log is missing\n")
            self.descriptionDone = ["no compile log"]
            return FAILURE
        size = yield threads.deferToThread(write_build_log, incoming, log)
        common = {"url": t.url, "sha": p("commit_sha"), "name": p("image_name"),
                  "localversion": p("localversion"), "timestamp": p("commit_date")}
        try:
            yield threads.deferToThread(write_reproducer, incoming, t.build, self.base_config, self.fragments,
                                        branch=t.branch, compiler=p("compiler") or "", **common)
        except OSError as e:
            yield self.addCompleteLog("problems", f"cannot read a config file for the reproducer: {e}\n")
            self.descriptionDone = ["no reproducer: a config file is unreadable"]
            return FAILURE
        self.setProperty(REPRODUCER_PROPERTY,
                         reproducer.facts(t.build, full_config=self.base_config is not None, **common), self.name)
        self.descriptionDone = [f"{BUILD_LOG} ({size} bytes), {reproducer.FILE}"]
        return SUCCESS
