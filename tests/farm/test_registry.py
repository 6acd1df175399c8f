"""Machine state, report acceptance and persistence (pure, real JSON file)."""

import json

import pytest

from buildbot_kernel.farm import instructions as ins
from buildbot_kernel.farm.registry import Registry, UnknownMachine, read_snapshot
from buildbot_kernel.settings import Machine

SHA = "ab" * 32


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def assignment(machine="m1", name="6.1.0-x"):
    return ins.make_assignment(Machine(name=machine), {"name": name, "url": "http://h/i/",
                                                    "files": {"vmlinuz": {"sha256": SHA}}},
                               "echo hi", "test", "http://h:1")


@pytest.fixture
def reg(tmp_path):
    events = []
    r = Registry(["m1", "m2"], tmp_path / "state.json", clock=Clock(), keys={"m1": "k" * 20})
    r.subscribe("m1", events.append)
    r.events = events
    return r


def test_full_step_walks_the_states(reg):
    assert reg.boot_request("m1") is None and reg.get("m1").state == "idle"
    a = assignment()
    reg.assign(a, owner="bisect 7")
    assert reg.get("m1").state == "booting" and reg.get("m1").owner == "bisect 7"
    assert reg.boot_request("m1").token == a.token
    assert reg.test_command("m1", a.token) == "echo hi"
    assert reg.test_command("m1", "forged") is None
    assert reg.report("m1", {"result": "kexec", "token": a.token}) == (True, "ok")
    assert reg.report("m1", {"result": "running", "token": a.token, "uname": "6.1.0-x"})[0]
    assert reg.get("m1").state == "testing"
    assert reg.report("m1", {"result": "good", "token": a.token, "uname": "6.1.0-x", "log": "L" * 9000})[0]
    st = reg.get("m1")
    assert st.state == "idle" and st.last_kernel == "6.1.0-x" and st.assignment is None
    assert st.last_report["result"] == "good" and len(st.last_report["log"]) == 4000
    assert [e.kind for e in reg.events] == ["fetched", "kexec", "running", "final"]


def test_replayed_forged_stale_reports_are_refused_and_counted(reg):
    a = assignment()
    reg.assign(a)
    reg.boot_request("m1")
    assert reg.report("m1", {"result": "good", "token": a.token, "uname": "6.1.0-x"})[0]
    assert reg.report("m1", {"result": "bad", "token": a.token}) == (False, "replayed token")
    assert reg.report("m1", {"result": "bad", "token": "f" * 32}) == (False, "forged token")
    b = assignment()
    reg.assign(b)
    c = assignment()
    reg.assign(c)
    assert reg.report("m1", {"result": "bad", "token": b.token}) == (False, "stale token")
    assert reg.report("m1", {"result": "weird", "token": c.token})[0] is False
    st = reg.get("m1")
    assert st.refused == 4 and st.last_report["result"] == "good"
    assert "token" in st.last_refused["why"] or "result" in st.last_refused["why"]
    # a token of another machine is forged there
    assert reg.report("m2", {"result": "good", "token": c.token}) == (False, "forged token")


def test_boot_request_after_kexec_is_a_reset(reg):
    a = assignment()
    reg.assign(a)
    reg.boot_request("m1")
    reg.report("m1", {"result": "kexec", "token": a.token})
    assert reg.boot_request("m1") is None  # the candidate went back to stage 1
    assert reg.events[-1].kind == "reset" and reg.events[-1].report["phase"] == "kexec"
    assert reg.report("m1", {"result": "good", "token": a.token})[1] == "stale token"


def test_state_survives_a_restart(tmp_path, reg):
    a = assignment()
    reg.assign(a)
    reg.boot_request("m1")
    reg.flag("m2", "uname mismatch")
    again = Registry(["m1", "m2", "m3"], tmp_path / "state.json")
    assert again.get("m1").state == "booting" and again.assignment("m1") == reg.assignment("m1")
    assert again.report("m1", {"result": "good", "token": a.token, "uname": "6.1.0-x"})[0]
    assert again.get("m2").flagged == "uname mismatch" and again.get("m3").state == "idle"
    data = json.loads((tmp_path / "state.json").read_text())
    assert data["machines"]["m1"]["last_kernel"] == "6.1.0-x"


def test_broken_machine_gets_nothing_until_repaired(reg):
    reg.mark_broken("m1", "no power")
    with pytest.raises(RuntimeError, match="broken"):
        reg.assign(assignment())
    assert reg.boot_request("m1") is None
    reg.repair("m1")
    reg.assign(assignment())
    assert reg.boot_request("m1") is not None


def test_public_view_hides_the_token(reg):
    a = assignment()
    reg.assign(a)
    snap = json.dumps(reg.snapshot())
    assert a.token not in snap and '"image": "6.1.0-x"' in snap


def test_another_master_reads_what_the_farms_master_wrote(reg, tmp_path):
    """A master without the farm shows the state file the farm's master keeps: same view, no token; a
    damaged file shows the configured machines as never seen."""
    a = assignment()
    reg.assign(a, owner="bisect 7")
    reg.boot_request("m1")
    seen = read_snapshot(["m1", "m2"], tmp_path / "state.json")
    assert seen == reg.snapshot() and seen["machines"][0]["state"] == "booting"
    assert a.token not in json.dumps(seen)
    for damaged in ('{"machines": {"m1": ', "[]"):  # cut short; JSON that is not an object
        (tmp_path / "state.json").write_text(damaged)
        assert [(m["name"], m["state"], m["last_seen"]) for m in read_snapshot(["m1", "m2"], tmp_path / "state.json")
                ["machines"]] == [("m1", "idle", 0.0), ("m2", "idle", 0.0)]


def test_unknown_machine(reg):
    with pytest.raises(UnknownMachine):
        reg.get("nope")


def test_polling_is_recent_boot_requests(reg):
    reg.boot_request("m1")
    assert reg.is_polling("m1", within=5)
    reg.clock.t += 10
    assert not reg.is_polling("m1", within=5)
    a = assignment()
    reg.assign(a)
    reg.report("m1", {"result": "kexec", "token": a.token})
    assert reg.is_polling("m1", within=5)  # a machine that reports polls next


def test_peek_changes_nothing(reg, tmp_path):
    assert reg.peek("m1") is None
    a = assignment()
    reg.assign(a)
    before = (tmp_path / "state.json").read_bytes()
    for _ in range(3):
        assert reg.peek("m1").token == a.token
    assert reg.events == [] and reg.get("m1").last_seen == 0 and reg.assignment("m1").phase == "assigned"
    assert (tmp_path / "state.json").read_bytes() == before
    reg.boot_request("m1")
    reg.report("m1", {"result": "kexec", "token": a.token})
    assert reg.peek("m1") is None and reg.assignment("m1").phase == "kexec"  # no reset from a look


def test_refused_reports_do_not_rewrite_the_state_file(reg, tmp_path, caplog):
    a = assignment()
    reg.assign(a)
    path = tmp_path / "state.json"
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with caplog.at_level("WARNING", logger="buildbot_kernel.farm.registry"):
        for _ in range(50):
            assert reg.report("m1", {"result": "bad", "token": "f" * 32}) == (False, "forged token")
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert reg.get("m1").refused == 50
    assert len([r for r in caplog.records if "refused report" in r.getMessage()]) == 1  # rate-limited


def test_keys_are_checked_in_constant_time_and_never_saved(reg, tmp_path):
    assert reg.authorized("m1", "k" * 20) and reg.authorized("m1", b"k" * 20)
    assert not reg.authorized("m1", "k" * 19) and not reg.authorized("m1", None)
    assert not reg.authorized("m2", "") and not reg.authorized("nope", "k" * 20)  # m2 has no key: refused
    reg.assign(assignment())
    assert "k" * 20 not in (tmp_path / "state.json").read_text()


def test_off_reactor_writer_writes_in_order_and_keeps_the_last_state(tmp_path):
    from buildbot_kernel.farm.factory import OffReactorWriter
    from buildbot_kernel.farm.testing import ReactorThread

    w, path = OffReactorWriter(), tmp_path / "state.json"

    def burst():  # as a flood of reports would, all on the reactor thread
        for i in range(50):
            w(str(path), json.dumps({"n": i}))

    def burst_then_flush():
        burst()
        return w.flush()

    ReactorThread.call(burst_then_flush)
    assert not w._busy
    assert json.loads(path.read_text()) == {"n": 49} and oct(path.stat().st_mode & 0o777) == "0o600"
