"""Machine classes and bisects on several machines of one class: the settings key, the request, the locks,
the pool of machines (real Buildbot locks) and the rounds in result.json."""

from __future__ import annotations

import pytest
from buildbot.locks import BaseLock
from twisted.internet import defer

from buildbot_kernel import settings
from buildbot_kernel.bisect import report
from buildbot_kernel.bisect.engine import BisectInputError
from buildbot_kernel.bisect.request import Target, parse_request
from buildbot_kernel.bisect.tester import TesterAbort as Abort
from buildbot_kernel.farm.driver import lock_name
from buildbot_kernel.master.bisect_config import machine_locks
from buildbot_kernel.steps.bisect_rounds import MachinePool
from buildbot_kernel.steps.subbuilds import Interrupted

BASE = """
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
"""
MACHINES = """
[[machine]]
name = "skl-1"
type = "qemu"
class = "skl"
[[machine]]
name = "skl-2"
type = "qemu"
class = "skl"
[[machine]]
name = "bdw"
type = "qemu"
"""


def parsed(extra: str = "") -> settings.Settings:
    return settings.parse(BASE + MACHINES + extra)


def problems(extra: str) -> str:
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(BASE + MACHINES + extra)
    return str(e.value)


def test_a_class_names_its_machines_and_a_machine_is_its_own_class():
    s = parsed()
    assert [settings.machine_class(m) for m in s.machines] == ["skl", "skl", "bdw"]
    assert settings.tester_machines(s.machines, "skl") == ["skl-1", "skl-2"]
    assert settings.tester_machines(s.machines, "skl-2") == ["skl-2"]
    assert settings.tester_machines(s.machines, "bdw") == ["bdw"]
    assert settings.tester_machines(s.machines, "icl") == []
    assert settings.tester_names(s.machines) == {"skl-1": ["skl-1"], "skl-2": ["skl-2"], "bdw": ["bdw"],
                                                 "skl": ["skl-1", "skl-2"]}


def test_a_class_named_like_another_machine_is_refused():
    text = problems('[[machine]]\nname = "hsw"\ntype = "qemu"\nclass = "bdw"\n')
    assert "[[machine]] ('hsw').class: 'bdw' is the name of another [[machine]]" in text


def test_a_watched_test_may_name_a_class_but_not_an_unknown_one():
    ok = '[[test]]\nname = "boot"\ncommand = "true"\nbranches = ["drm-tip"]\ntesters = ["skl"]\n'
    assert parsed(ok).tests[0].testers == ("skl",)
    text = problems(ok.replace('"skl"]', '"icl"]'))
    assert "[[test]] ('boot').testers: 'icl' is neither \"local\" nor a configured [[machine]] or machine class" \
        in text and "'skl'" in text


TARGETS = [Target("drm-tip", "drm-intel", "https://example.org/i915.git", "drm-tip", "x86_64")]
REQ = {"target": "drm-tip", "good": "v6.8", "bad": "drm-tip", "test": "boot"}


def request(**over):
    testers = settings.tester_names(parsed().machines)
    tests = [settings.Test(name="boot", command="true", mode="test", timeout=30)]
    return parse_request({**REQ, **over}, TARGETS, ["x86_64"], testers, tests)


def test_a_bisect_names_a_class_or_a_machine_and_how_many_machines():
    r = request(tester="skl", max_machines="2")
    assert (r.tester, r.max_machines) == ("skl", 2)
    assert request(tester="bdw").max_machines == 0  # every free one
    assert r.with_tester("skl-1").tester == "skl-1" and r.with_tester("skl-1").max_machines == 2
    with pytest.raises(BisectInputError) as e:
        request(tester="icl")
    assert e.value.field == "tester" and "machine class" in e.value.message and "skl" in e.value.message
    with pytest.raises(BisectInputError) as e:
        request(tester="skl", max_machines="-1")
    assert e.value.field == "max_machines" and "0 = every free one" in e.value.message


def test_a_class_bisect_holds_no_lock_for_its_whole_run_a_class_of_one_holds_its_machine():
    classes = {"skl": ["skl-1", "skl-2"], "skl-1": ["skl-1"], "one": ["bdw"]}
    assert machine_locks("skl", classes) == []
    [access] = machine_locks("skl-1", classes)
    assert access.lockid.name == lock_name("skl-1")
    [access] = machine_locks("one", classes)
    assert access.lockid.name == lock_name("bdw")


class ScriptedMachine:
    """A machine tester whose answers the test gives, one Deferred per test."""

    def __init__(self, name):
        self.name = name
        self.pending: list[tuple[str, defer.Deferred]] = []

    def test(self, image, sha):
        d = defer.Deferred()
        self.pending.append((sha, d))
        return d

    def answer(self, verdict="good"):
        sha, d = self.pending.pop(0)
        d.callback((verdict, {"tester": self.name}))

    def breaks(self):
        _, d = self.pending.pop(0)
        d.errback(Abort(-1, f"machine {self.name} is broken: no power"))


def pool_of(*names):
    machines = {n: ScriptedMachine(n) for n in names}
    locks = {n: BaseLock(lock_name(n)) for n in names}
    from buildbot.plugins import util

    accesses = {n: util.MasterLock(lock_name(n)).access("exclusive") for n in names}
    return MachinePool(list(names), machines, locks, accesses), machines, locks, accesses


def results(*ds):
    out = []
    for d in ds:
        d.addBoth(out.append)
    return out


def test_candidates_run_side_by_side_each_holding_its_machine_only_while_it_tests():
    pool, m, locks, acc = pool_of("a", "b")
    assert pool.free() == 2
    first, second, third = pool.test(None, "1" * 40), pool.test(None, "2" * 40), pool.test(None, "3" * 40)
    got = results(first, second, third)
    assert [len(m["a"].pending), len(m["b"].pending)] == [1, 1] and pool.free() == 0
    m["b"].answer("bad")  # b is free again at once and takes the third candidate: never idle
    assert [(v, d["tester"]) for v, d in got] == [("bad", "b")]
    assert len(m["b"].pending) == 1 and len(m["a"].pending) == 1
    m["a"].answer("good")
    assert pool.free() == 1  # a is released the moment its test is over
    m["b"].answer("skip")
    assert [g[0] for g in got] == ["bad", "good", "skip"] and pool.free() == 2 and pool.used == {"a", "b"}


def test_a_machine_that_breaks_drops_out_and_its_candidate_goes_to_another():
    pool, m, _, _ = pool_of("a", "b")
    got = results(pool.test(None, "1" * 40), pool.test(None, "2" * 40))
    m["a"].breaks()  # infrastructure: never a verdict; b tests that candidate after its own
    assert got == [] and "a" in pool.dropped and pool.alive() == ["b"]
    m["b"].answer("good")
    assert len(m["b"].pending) == 1 and m["b"].pending[0][0] == "1" * 40
    m["b"].answer("bad")
    assert [g[0] for g in got] == ["good", "bad"]


def test_when_every_machine_broke_the_test_aborts_naming_each_reason():
    pool, m, _, _ = pool_of("a")
    got = results(pool.test(None, "1" * 40))
    m["a"].breaks()
    assert len(got) == 1 and got[0].check(Abort)
    assert "every machine of the class is broken: a: machine a is broken: no power" in str(got[0].value)


def test_a_machine_another_bisect_holds_is_waited_for_and_a_stop_ends_the_wait():
    pool, m, locks, acc = pool_of("a")
    other = object()
    locks["a"].claim(other, acc["a"])  # a single-machine bisect or a watched test holds it
    assert pool.free() == 0
    got = results(pool.test(None, "1" * 40))
    assert m["a"].pending == []
    locks["a"].release(other, acc["a"])
    assert len(m["a"].pending) == 1  # it started as soon as the machine was released
    m["a"].answer("good")
    locks["a"].claim(other, acc["a"])
    waiting = results(pool.test(None, "2" * 40))
    pool.cancel("stopped")
    assert len(waiting) == 1 and waiting[0].check(Interrupted) and m["a"].pending == []
    assert got[0][0] == "good"


def test_result_json_groups_steps_in_rounds_and_counts_every_build():
    steps = [
        {"n": 1, "round": 1, "sha": "a" * 40, "verdict": "good", "image": "i1", "tester": "skl-1",
         "build": {"sha": "a" * 40}},
        {"n": 2, "round": 1, "sha": "b" * 40, "verdict": "bad", "image": "i2", "tester": "skl-2", "build": None},
        {"n": 3, "round": 2, "sha": "c" * 40, "verdict": "skip", "image": "i3", "tester": "skl-1",
         "ahead": ["d" * 40, "e" * 40]},
    ]
    doc = report.result_document("x", {}, report.DONE, steps, built=["a" * 40, "f" * 40],
                                 machines=["skl-1", "skl-2"])
    assert doc["builds"] == 4  # a (on demand), d and e (ahead), f (verification): each once
    assert [r["round"] for r in doc["rounds"]] == [1, 2] and doc["machines"] == ["skl-1", "skl-2"]
    assert report.round_summary(doc["rounds"][0]) == f"round 1: 2 candidates: {'a' * 12} good, {'b' * 12} bad"
    assert report.round_summary(doc["rounds"][1]) == f"round 2: 1 candidate: {'c' * 12} skip"
