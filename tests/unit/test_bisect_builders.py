"""The master configuration's bisect build builders: one per branch builder, its own status, the branch
builder's steps, work tree and lock; the bisect's Triggerable schedulers start builds there only."""

from __future__ import annotations

import shutil
from pathlib import Path

from buildbot.schedulers.triggerable import Triggerable

from buildbot_kernel.master.bisect_config import bisect_builder_name, build_scheduler_name
from buildbot_kernel.master.config import make_config
from buildbot_kernel.resources import shipped

ROOT = Path(__file__).resolve().parents[2]
BRANCHES = ("drm-intel-fixes", "drm-intel-next", "drm-tip")


def test_each_branch_builder_has_a_bisect_builder_sharing_its_tree_and_lock(tmp_path):
    shutil.copy(shipped("settings.toml"), tmp_path / "settings.toml")
    c = make_config(str(tmp_path), str(tmp_path / "settings.toml"))
    builders = {b.name: b for b in c["builders"]}
    triggerables = {s.name: s for s in c["schedulers"] if isinstance(s, Triggerable)}
    for branch in BRANCHES:
        own, bisect = builders[branch], builders[bisect_builder_name(branch)]
        assert bisect.tags == ["bisect"] and branch not in bisect.tags and "drm-intel" not in bisect.tags
        assert bisect.workerbuilddir == own.workerbuilddir and bisect.builddir != own.builddir
        assert [lock.lockid for lock in bisect.locks] == [lock.lockid for lock in own.locks]
        assert bisect.locks[0].lockid is own.locks[0].lockid  # one lock object: Buildbot refuses two of a name
        steps = [(s.step_class, s.kwargs.get("name")) for s in bisect.factory.steps]
        assert steps == [(s.step_class, s.kwargs.get("name")) for s in own.factory.steps] and len(steps) > 5
        assert triggerables[build_scheduler_name(branch)].builderNames == [bisect_builder_name(branch)]
    # no scheduler of any kind starts a branch builder's build for a bisect
    assert not any(set(t.builderNames) & set(BRANCHES) for t in triggerables.values())
