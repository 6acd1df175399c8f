"""Settings -> BuildmasterConfig.  master.cfg calls ``make_config`` and nothing else."""

from __future__ import annotations

import os
from collections import Counter

from buildbot import config as bbconfig
from buildbot.plugins import changes, schedulers, util
from buildbot.revlinks import default_revlink_matcher
from buildbot.worker.local import LocalWorker

from buildbot_kernel import settings as settings_mod
from buildbot_kernel.bisect.records import pinned_images
from buildbot_kernel.buildbot_adapter import RemoteWorker, write_rest_json_on_the_reactor
from buildbot_kernel.commitlink import RevLinks
from buildbot_kernel.gitrepo import REVISION_FIELD
from buildbot_kernel.imagetree.services import services_from_settings
from buildbot_kernel.master import dbreconnect, forms
from buildbot_kernel.master.auth import EventsGuard, LoginRequired, www_auth
from buildbot_kernel.master.bisect_config import FORCE_SCHEDULER, add_bisect
from buildbot_kernel.master.cluster import add_cluster
from buildbot_kernel.master.dashboard import KernelDashboard
from buildbot_kernel.master.factory import kernel_build_factory, tree_lock
from buildbot_kernel.master.farm_route import farm_gate
from buildbot_kernel.master.farm_service import FarmService
from buildbot_kernel.master.fdlimit import raise_open_files
from buildbot_kernel.master.hostguard import WebHostGuard
from buildbot_kernel.master.listeners import ListenerGuard
from buildbot_kernel.master.loop_config import IMAGE_TEST_FORCE, add_loop
from buildbot_kernel.master.machines_config import add_machines, repaired_machine
from buildbot_kernel.master.schedulers import AtStartup
from buildbot_kernel.naming import safe_branch
from buildbot_kernel.notify.reporter import notify_services
from buildbot_kernel.steps.heads import ReconcileHeads
from buildbot_kernel.steps.store import UpdateStore
from buildbot_kernel.target import BuildTarget, builder_name, poller_dir
from buildbot_kernel.util import identifier

CONTROL_WORKER = "master-local"  # in-process worker for orchestration builders (heads, bisect)
HEADS_BUILDER = "heads"
HEADS_FORCE_SCHEDULER = "heads-now"


def strport(port: int, address: str) -> str:
    """A Twisted endpoint string listening on one address (an IPv6 address's colons escaped)."""
    return f"tcp:{port}:interface={address.replace(':', chr(92) + ':')}"


def revision_field() -> util.StringParameter:
    """The Build form's revision: empty (the branch head) or one word git cannot read as an option."""
    return util.StringParameter(name="revision", label="revision (empty = branch head)", default="",
                                regex=REVISION_FIELD)


def branch_targets(s: settings_mod.Settings, images_root: str, state_dir: str):
    """(target, builder name) for every configured (repository, branch)."""
    counts = Counter(b for r in s.repositories for b in r.branches)
    out = []
    for r in s.repositories:
        build = s.build(r.build)
        for b in r.branches:
            t = BuildTarget(repository=r.name, url=r.url, branch=b, build=build,
                            images_root=images_root, state_dir=state_dir)
            out.append((t, builder_name(r.name, b, counts[b] == 1)))
    return out


def dashboard_branches(s: settings_mod.Settings, targets) -> list[dict]:
    """What the Kernels dashboard lists per branch: where its head comes from and where it is built."""
    return [{"repository": t.repository, "url": t.url, "branch": t.branch, "builder": bname,
             "web_url": s.repository(t.repository).web_url} for t, bname in targets]


def make_config(basedir: str, settings_path: str) -> dict:
    try:
        s = settings_mod.load(settings_path, master_dir=basedir)
    except settings_mod.SettingsError as e:
        for line in str(e).splitlines():
            bbconfig.error(line)
        return {}  # not reached: error() raises once collected by checkconfig

    basedir = os.path.abspath(basedir)
    images_root = str(settings_mod.tree_root(s))
    state_dir = str(settings_mod.state_path(s))  # absolute: shared by several masters
    try:
        os.makedirs(images_root, exist_ok=True)
    except OSError as e:  # images.root is relative to the master's directory, checked here for real
        bbconfig.error(f"{settings_path}: [images].root: cannot use {images_root} as the image tree "
                       f"({e.strerror}); point images.root at a directory (it is created when missing)")
        return {}
    srv = s.server
    write_rest_json_on_the_reactor()  # this Buildbot's web API can drop an answer's body otherwise
    raise_open_files()  # the listeners' caps assume room for them and the builds (master/fdlimit.py)
    targets = branch_targets(s, images_root, state_dir)
    c: dict = {
        "title": srv.title,
        "titleURL": srv.url or f"http://localhost:{srv.web_port}/",
        "buildbotURL": srv.url or f"http://localhost:{srv.web_port}/",
        "db": {"db_url": srv.db_url, "engine_kwargs": dbreconnect.engine_kwargs(srv.db_url)},
        "protocols": {"pb": {"port": strport(srv.worker_port, s.listener("worker_bind"))}},
        "www": {
            "port": strport(srv.web_port, s.listener("web_bind")),
            "plugins": {"waterfall_view": {}, "console_view": {}, "grid_view": {}, "wsgi_dashboards": [{
                "name": "kernels", "caption": "Kernels", "order": 5, "icon": "server",
                "app": KernelDashboard(images_root, state_dir, s.images.base_url,
                                       branches=dashboard_branches(s, targets))}]},
        },
        "revlink": RevLinks({r.url: r.web_url for r in s.repositories}, fallback=default_revlink_matcher),
        "buildbotNetUsageData": None,
        "workers": [RemoteWorker(w.name, w.password, max_builds=w.max_builds) for w in s.workers]
        + [LocalWorker(CONTROL_WORKER)],
        "change_source": [],
        "schedulers": [],
        "builders": [],
        # README "When things fail"; the web UI's and the worker port's limits (README "Images")
        "services": [dbreconnect.ReconnectingDatabase(), ListenerGuard(web_per_address=srv.web_per_address)],
    }
    build_workers = [w.name for w in s.workers]

    for r in s.repositories:
        c["change_source"].append(changes.GitPoller(
            repourl=r.url, branches=list(r.branches), pollInterval=r.poll_interval,
            workdir=str(poller_dir(state_dir, r.name)), project=r.name,
            buildPushesWithNoCommits=True, pollAtLaunch=True, name=f"poller-{r.name}"))

    maintainer_schedulers = [HEADS_FORCE_SCHEDULER, FORCE_SCHEDULER]  # + each branch's rebuild-<builder>
    heads_steps = []
    for r in s.repositories:
        repo_targets = []
        for t, bname in targets:
            if t.repository != r.name:
                continue
            sched = identifier(f"changes-{bname}")
            repo_targets.append((t, bname, sched))
            c["schedulers"].append(schedulers.SingleBranchScheduler(
                name=sched, builderNames=[bname], treeStableTimer=min(10, r.poll_interval),
                change_filter=util.ChangeFilter(repository=t.url, branch=t.branch)))
            maintainer_schedulers.append(identifier(f"rebuild-{bname}"))
            c["schedulers"].append(schedulers.ForceScheduler(
                name=identifier(f"rebuild-{bname}"), builderNames=[bname], label=f"Build {bname}",
                buttonName="Build", reason=forms.reason("forced"),
                codebases=[util.CodebaseParameter(
                    "", label="Commit",
                    branch=util.FixedParameter(name="branch", default=t.branch),
                    revision=revision_field(),
                    repository=util.FixedParameter(name="repository", default=t.url),
                    project=util.FixedParameter(name="project", default=t.repository))],
                properties=[util.BooleanParameter(name="force_rebuild", default=False,
                                                  label="build even if this commit failed before")]))
            c["builders"].append(util.BuilderConfig(
                name=bname, workernames=build_workers, factory=kernel_build_factory(s, t),
                tags=[t.repository, safe_branch(t.branch)],
                locks=[tree_lock(bname)],
                description=f"{t.repository} {t.branch} -> images/{safe_branch(t.branch)}/ "
                            f"(build config {t.build_name})"))
        heads_steps += [UpdateStore(r.name, r.url, state_dir), ReconcileHeads(r.url, repo_targets)]

    heads_factory = util.BuildFactory(heads_steps)
    c["builders"].append(util.BuilderConfig(
        name=HEADS_BUILDER, workernames=[CONTROL_WORKER], factory=heads_factory, tags=["control"],
        description="asks each repository for its branch heads and builds those without an image"))
    c["schedulers"].append(AtStartup(name="heads-at-startup", builderNames=[HEADS_BUILDER]))
    c["schedulers"].append(schedulers.Periodic(
        name="heads-periodic", builderNames=[HEADS_BUILDER],
        periodicBuildTimer=max(600, 4 * min(r.poll_interval for r in s.repositories))))
    c["schedulers"].append(schedulers.ForceScheduler(  # the check reads the settings, never a source stamp
        name=HEADS_FORCE_SCHEDULER, builderNames=[HEADS_BUILDER], label="Check branch heads now", buttonName="Check",
        codebases=[forms.no_source()], reason=forms.reason("check heads")))
    add_bisect(c, s, targets, state_dir, images_root, build_workers)
    if add_loop(c, s, targets, state_dir, images_root):
        maintainer_schedulers.append(IMAGE_TEST_FORCE)
    # accounts and roles: README.md "Putting it on a lab network"
    c["www"].update(www_auth(s.auth, s.auth and str(settings_mod.resolve(s, s.auth.htpasswd)),
                             maintainer_schedulers, FORCE_SCHEDULER))
    if s.auth is None:  # everyone who reaches the web UI is an admin: not a page through DNS rebinding
        c["services"].append(WebHostGuard(url=srv.url))
    if s.auth and s.auth.anonymous == "none":  # the dashboards are outside Buildbot's authz
        for d in c["www"]["plugins"]["wsgi_dashboards"]:
            d["app"] = LoginRequired(d["app"])
        c["services"].append(EventsGuard())  # and so are Buildbot's /sse streams
    tree_services = services_from_settings(s, images_root)
    # retention never deletes an image that an unfinished bisect may still test
    tree_services[0].pin_sources.append(lambda: pinned_images(state_dir))
    c["services"] += tree_services
    c["services"] += notify_services(s, state_dir, images_root, [b for _, b in targets],  # README "Notifications"
                                     outbox_dir=os.path.join(basedir, settings_mod.MASTER_STATE))
    if s.machines and srv.test_farm:  # else another master runs it (README "Growing past one machine")
        c["services"].append(FarmService(settings_path=os.path.abspath(settings_path), state_dir=state_dir,
                                       master_dir=basedir))
    add_machines(c, [m.name for m in s.machines], CONTROL_WORKER, can_start=farm_gate(s, repaired_machine))
    if srv.mq_router:
        add_cluster(c, srv.mq_router, srv.master_timeout)
    return c
