"""Which master may start a build that drives test machines (README "Growing past one machine"): the
decision, what it reads of a request, and the builders it guards in the master configuration."""

from __future__ import annotations

import pytest
from test_multi_master import PG

from buildbot_kernel import settings
from buildbot_kernel.master.bisect_config import BISECT_BUILDER, bisect_testers
from buildbot_kernel.master.config import make_config
from buildbot_kernel.master.farm_route import farm_gate, may_start_here, needs_farm
from buildbot_kernel.master.farm_service import FarmService
from buildbot_kernel.master.loop_config import IMAGE_TEST_BUILDER, image_test_testers
from buildbot_kernel.master.machines_config import MACHINES_BUILDER, repaired_machine

ONE = """
[[repository]]
name = "drm-intel"
url = "https://example.org/i915.git"
branches = ["drm-tip"]
build = "x86_64"
[[build]]
name = "x86_64"
[[worker]]
name = "w"
password = "p"
[[machine]]
name = "vm1"
type = "qemu"
class = "tgl"
[[test]]
name = "on-a-machine"
command = "true"
branches = ["drm-tip"]
testers = ["tgl"]
[[test]]
name = "anywhere"
command = "true"
branches = ["drm-tip"]
testers = ["local"]
[[test]]
name = "either"
command = "true"
branches = ["drm-tip"]
testers = ["local", "vm1"]
"""
SHARED = f'[server]\nmq_router = "ws://127.0.0.1:8090/ws"\ndb_url = "{PG}"\nstate_dir = "/srv/bbk/state"\n' + ONE


@pytest.mark.parametrize("testers", [["local"], [" local "], [""], [None], [], ["local", "local"], ["local\n"]])
def test_the_local_tester_runs_on_any_master(testers):
    assert not needs_farm(testers)
    assert may_start_here(testers, farm_here=False) and may_start_here(testers, farm_here=True)


@pytest.mark.parametrize("testers", [["vm1"], ["tgl"], ["local", "vm1"], ["vm1", "local"], ["no-such-machine"],
                                     [["vm1"]], [7], ["LOCAL"]])
def test_a_machine_a_class_or_anything_unknown_waits_for_the_farms_master(testers):
    """A mixed test runs where all its testers can: the farm's master.  Names (and values a form or REST
    sent that are not names) this master cannot judge go there too, and fail there, naming the field."""
    assert needs_farm(testers)
    assert not may_start_here(testers, farm_here=False)
    assert may_start_here(testers, farm_here=True)


def test_what_each_builder_reads_of_a_request():
    s = settings.parse(ONE)
    tests = {t.name: t for t in s.tests}
    props = {"tester": "tgl", "machine": "vm1", "image_test": "on-a-machine"}
    assert bisect_testers(props.get) == ["tgl"] and repaired_machine(props.get) == ["vm1"]
    assert bisect_testers({}.get) == [None] and not needs_farm(bisect_testers({}.get))  # the form's default
    reads = image_test_testers(tests)
    assert reads(props.get) == ["tgl"] and needs_farm(reads(props.get))
    assert reads({"image_test": "anywhere"}.get) == ["local"]
    assert reads({"image_test": "either"}.get) == ["local", "vm1"]
    # a test this master does not know (or not a name at all) names no tester: it starts and fails at once
    for value in ("nope", ["on-a-machine"], None, 3):
        assert reads({"image_test": value}.get) == []


def _config(tmp_path, text: str, name: str = "master") -> dict:
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace("/srv/bbk/state", str(tmp_path / "shared-state")))  # nothing outside tmp_path
    return make_config(str(tmp_path / name), str(path))


def _builders(tmp_path, text: str) -> dict:
    return {b.name: b for b in _config(tmp_path, text)["builders"]}


def test_with_several_masters_exactly_the_builders_that_drive_machines_are_routed(tmp_path):
    builders = _builders(tmp_path, SHARED)
    routed = {name for name, b in builders.items() if b.canStartBuild is not None}
    assert routed == {BISECT_BUILDER, IMAGE_TEST_BUILDER, MACHINES_BUILDER}
    assert farm_gate(settings.parse(SHARED), bisect_testers) is not None


def test_one_master_routes_nothing(tmp_path):
    """Alone, a master has no other to wait for: a machine request without a farm starts and says why."""
    assert all(b.canStartBuild is None for b in _builders(tmp_path, ONE).values())
    assert farm_gate(settings.parse(ONE), bisect_testers) is None


def test_a_master_told_not_to_run_the_farm_knows_the_machines_and_routes_their_work(tmp_path):
    """``test_farm = false``: the forms and [[test]]s name the machines, the farm runs elsewhere whichever
    master starts first."""
    c = _config(tmp_path, SHARED.replace("[server]\n", "[server]\ntest_farm = false\n"), "b")
    assert not any(isinstance(s, FarmService) for s in c["services"])
    assert {b.name for b in c["builders"] if b.canStartBuild is not None} == {
        BISECT_BUILDER, IMAGE_TEST_BUILDER, MACHINES_BUILDER}
    default = _config(tmp_path, SHARED, "a")
    assert any(isinstance(s, FarmService) for s in default["services"])  # the default: it may run the farm


def test_not_running_the_farm_alone_is_refused_naming_the_fix():
    with pytest.raises(settings.SettingsError) as e:
        settings.parse("[server]\ntest_farm = false\n" + ONE, "s.toml")
    assert ("s.toml: [server].test_farm: false leaves the test farm to another master, but mq_router is not set "
            "(one master): machine tests would fail; remove test_farm or set mq_router") in str(e.value)
    assert settings.parse(SHARED.replace("[server]\n", "[server]\ntest_farm = false\n")).server.test_farm is False
