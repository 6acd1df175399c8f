"""Holes of the farm review, each driven through the part an outsider reaches: the machines' registry (what
a key holder, maybe a candidate kernel running a commit's code, can make the server keep and log), the real
settings parser (what ``buildbot checkconfig`` lets through) and the kernel-facts step (what a pushed
commit can make a build do).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import pytest
from buildbot.process.results import FAILURE, SUCCESS
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import ExpectShell, TestBuildStepMixin
from twisted.internet import defer
from twisted.trial import unittest as trial

from buildbot_kernel import kbuild_commands, settings
from buildbot_kernel.farm import instructions as ins
from buildbot_kernel.farm.factory import make_farm
from buildbot_kernel.farm.keys import KeyFileError
from buildbot_kernel.farm.registry import FIELD_CHARS, KEY_PLACEHOLDER, Registry
from buildbot_kernel.ledger import FAILED, BuildLedger
from buildbot_kernel.naming import MAX_BRANCH_CHARS, NameError_, image_name
from buildbot_kernel.resources import shipped
from buildbot_kernel.settings import Build, Machine
from buildbot_kernel.steps.kernel import KernelFacts
from buildbot_kernel.steps.publish import RecordOutcome
from buildbot_kernel.target import BuildTarget

KEY = "the-m1-machine-key-0123456789"
IMAGE = {"name": "6.1.0-good", "url": "http://h/i/", "files": {"vmlinuz": {"sha256": "ab" * 32}}}


# --- refused reports -----------------------------------------------------------------------------------

def test_a_refused_reports_result_is_kept_redacted_and_bounded(tmp_path):
    """The hole: a refused report's ``result`` was kept whole (up to the 256 KiB body limit) with the
    machine key in it, and shown on the dashboard, at GET /machines/<name> and in farm.json; an accepted
    report's fields have the key replaced and are cut to 500 characters."""
    state = tmp_path / "state.json"
    reg = Registry(["m1"], state, keys={"m1": KEY})
    ok, why = reg.report("m1", {"result": "<script>x</script>" + "A" * 250_000 + " " + KEY, "token": KEY})
    assert not ok and KEY not in why
    reg.report("m1", {"result": KEY + " and more", "token": "nope"})
    kept = reg.get("m1").last_refused
    assert kept["result"].startswith(KEY_PLACEHOLDER) and len(kept["result"]) <= FIELD_CHARS
    assert KEY not in json.dumps(kept)
    reg.assign(ins.make_assignment(Machine(name="m1"), IMAGE, "true", "boot", "http://s"))  # writes the file
    snapshot = json.dumps(reg.snapshot())
    assert KEY not in snapshot and len(snapshot) < 5000
    on_disk = state.read_text()
    assert KEY not in on_disk and len(on_disk) < 5000


def test_refused_reports_with_ever_new_results_log_one_line(caplog):
    """The hole: the refusal log's rate limiter was keyed on text holding the first 20 characters of the
    sender's ``result``, so 5000 reports with distinct results wrote 5000 log lines."""
    caplog.set_level(logging.WARNING, logger="buildbot_kernel.farm.registry")
    reg = Registry(["m1"], keys={"m1": KEY})
    for i in range(5000):
        assert reg.report("m1", {"result": f"x{i}", "token": "t"})[0] is False
    lines = [r.getMessage() for r in caplog.records if "refused report" in r.getMessage()]
    assert len(lines) == 1 and "unknown result 'x0'" in lines[0], lines[:3]
    assert reg.get("m1").refused == 5000
    assert reg.get("m1").last_refused["why"].startswith("unknown result 'x4999'")  # the message keeps the text


# --- one key per machine -------------------------------------------------------------------------------

SHIPPED = shipped("settings.toml").read_text()
REMOTE = '\n[[machine]]\nname = "{name}"\ntype = "remote"\npower_cycle = "true"\nkey_file = "{key_file}"\n'


def _key(path: Path, text: str = "one-key-for-the-whole-lab-0123456789\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)


def _settings(*machines: tuple[str, str]) -> str:
    text = SHIPPED.replace("[server]\n", '[server]\nstate_dir = "state"\n', 1)
    return text + "".join(REMOTE.format(name=n, key_file=k) for n, k in machines)


@pytest.mark.parametrize("files", [("keys/lab.key", "keys/lab.key"), ("keys/a.key", "keys/b.key")])
def test_two_machines_with_one_key_are_refused(tmp_path, files):
    """The hole: two [[machine]] tables could name one key file (or two files holding one key), and then
    either machine's key authorized requests for the other (POST /machines/skl-2/boot with skl-1's key)."""
    for f in files:
        _key(tmp_path / f)
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(_settings(("skl-1", files[0]), ("skl-2", files[1])), str(tmp_path / "settings.toml"))
    msg = str(e.value)
    assert "('skl-2').key_file: machines 'skl-1' and 'skl-2' have the same key" in msg, msg
    assert 'key_file = "keys/skl-2.key"' in msg and "one-key-for" not in msg


def test_machines_with_keys_of_their_own_are_fine(tmp_path):
    _key(tmp_path / "keys/a.key", "key-of-machine-a-0123456789\n")
    _key(tmp_path / "keys/b.key", "key-of-machine-b-0123456789\n")
    s = settings.parse(_settings(("skl-1", "keys/a.key"), ("skl-2", "keys/b.key")), str(tmp_path / "settings.toml"))
    assert [m.name for m in s.machines] == ["skl-1", "skl-2"]


def test_a_key_file_holding_a_generated_key_is_refused_when_the_farm_starts(tmp_path):
    """checkconfig cannot see a qemu machine's generated key (it is made under the master's state
    directory); a key file copied from it would let the other machine act as the qemu one."""
    generated = tmp_path / "work" / "keys" / "vm.key"
    _key(generated, "generated-key-of-vm-0123456789\n")
    _key(tmp_path / "keys/skl-1.key", generated.read_text())
    text = _settings(("skl-1", "keys/skl-1.key")) + '\n[[machine]]\nname = "vm"\ntype = "qemu"\n'
    s = settings.parse(text, str(tmp_path / "settings.toml"))
    with pytest.raises(KeyFileError, match="machines 'skl-1' and 'vm' have the same key"):
        make_farm(s, tmp_path / "state.json", tmp_path / "work")


# --- a machine's command line --------------------------------------------------------------------------

@pytest.mark.parametrize("cmdline", ["console=ttyS0\nquiet", "console=ttyS0\rquiet", "quiet\tpanic=-1",
                                     "quiet\x1b[2J", "quiet\x00"])
def test_a_command_line_with_a_control_character_is_refused_by_checkconfig(tmp_path, cmdline):
    """The hole: a ``cmdline`` with a newline passed checkconfig and failed only when the instructions were
    rendered, after the attempt had moved to ``fetched``: the machine never booted, and the error, which
    quoted the whole command line, put the live token into the log."""
    text = _settings() + f'\n[[machine]]\nname = "vm1"\ntype = "qemu"\ncmdline = {json.dumps(cmdline)}\n'
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(text, str(tmp_path / "settings.toml"))
    assert "('vm1').cmdline: expected extra kernel command line for the candidate kernel, on one line" in str(e.value)


def test_an_assignment_that_cannot_be_rendered_never_reaches_a_machine_and_never_shows_its_token():
    """A ``Machine`` made in code skips checkconfig: the assignment is refused when it is made, before the
    registry hands it out, and the message does not quote the command line (it holds the token)."""
    reg = Registry(["vm1"], keys={"vm1": KEY})
    with pytest.raises(ins.InstructionError) as e:
        ins.make_assignment(Machine(name="vm1", cmdline="console=ttyS0\nquiet"), IMAGE, "true", "boot", "http://s")
    assert "CMDLINE" in str(e.value) and "bbk.token" not in str(e.value) and "console" not in str(e.value)
    assert reg.boot_request("vm1", "1") is None and reg.get("vm1").state == "idle"
    a = ins.make_assignment(Machine(name="vm1"), IMAGE, "true", "boot", "http://s")
    a.cmdline += "\nKERNEL_URL=http://evil/"
    with pytest.raises(ins.InstructionError) as e:
        ins.render(a)
    assert a.token not in str(e.value) and "evil" not in str(e.value)


# --- a commit the image name cannot hold ---------------------------------------------------------------

SHA = "18097b4c2a6d93e1f3c7a4bbd0e6f9a1b2c3d4e5"
FACTS = f"kernelversion=6.1.0\nlocalversion_files=\nat_tag=0\nsha={SHA}\ncommitter_ts={{ts}}\ncpus=2\n"


class UnnamedCommit(TestBuildStepMixin, TestReactorMixin, trial.TestCase):
    """The hole: KernelFacts named the image with no guard on the commit's date, and a committer date of
    year 10000 or more (git takes any number; ``git hash-object -t commit --literally`` writes one) raised
    ValueError or OverflowError: the build ended in EXCEPTION and the ledger recorded nothing, so the
    commit was tried again and again.  A name over 200 characters went on to compile an image the tree's
    readers then refused."""

    def setUp(self):
        self.setup_test_reactor()
        return self.setup_test_build_step()

    def target(self) -> BuildTarget:
        root = tempfile.mkdtemp(prefix="bbk-steptest-")
        self.addCleanup(shutil.rmtree, root, True)
        return BuildTarget(repository="linux", url="https://example.org/linux.git", branch="master",
                           build=Build(name="x86_64"), images_root=root + "/images", state_dir=root + "/state")

    @defer.inlineCallbacks
    def _fails_cleanly_and_is_recorded(self, facts: str, problem: str):
        t = self.target()
        self.setup_step(KernelFacts(t))
        self.setup_step(RecordOutcome(t))  # runs after a failure (alwaysRun), in the same build
        self.build.results = FAILURE  # what KernelFacts' FAILURE (haltOnFailure) makes of the build
        self.expect_commands(ExpectShell(workdir="work", log_environ=False, command=kbuild_commands.FACTS_SCRIPT)
                             .stdout(facts).exit(0))
        self.expect_outcome(result=FAILURE)
        self.expect_outcome(result=SUCCESS)
        self.expect_property("commit_sha", SHA)
        yield self.run_step()
        self.assertIn(problem, self.get_nth_step(0).logs["problem"].stdout)
        self.assertEqual(BuildLedger(t.ledger_path).get("linux", "master", SHA, "x86_64")["outcome"], FAILED)

    def test_year_10000(self):
        return self._fails_cleanly_and_is_recorded(
            FACTS.format(ts=253402300800), f"commit {SHA} (committer date '253402300800') cannot be named: "
                                           "committer date 253402300800 is not in the years 1000 to 9999")

    def test_two_to_the_63(self):
        return self._fails_cleanly_and_is_recorded(
            FACTS.format(ts=2**63), f"commit {SHA} (committer date '{2**63}') cannot be named: "
                                    f"committer date {2**63} is not in the years 1000 to 9999")

    def test_a_date_before_1970(self):
        """git's %ct prints nothing for it: the step said "not a kernel tree" and recorded nothing."""
        return self._fails_cleanly_and_is_recorded(
            FACTS.replace("committer_ts={ts}\n", "committer_ts=\n"),
            f"commit {SHA} has no committer date git can print (one before 1970?)")

    def test_a_localversion_file_no_name_can_hold(self):
        """The commit's own file, like its date: recorded as failed, not tried again at every heads check."""
        facts = FACTS.format(ts=1374190200).replace(
            "localversion_files=\n", "localversion_files= x\nlocalversion.1=localversion-x\t x\n")
        return self._fails_cleanly_and_is_recorded(facts, "the kernel tree's file 'localversion-x' adds ' x'")

    def test_an_image_name_over_200_characters(self):
        facts = FACTS.format(ts=1374190200).replace("localversion_files=\n", f"localversion_files=-{'r' * 190}\n")
        return self._fails_cleanly_and_is_recorded(facts, "the image name would be 221 characters long")


# --- a branch's name in every image name ---------------------------------------------------------------

SHIPPED_BRANCHES = 'branches = ["drm-intel-fixes", "drm-intel-next", "drm-tip"]'


def _with_branch(branch: str) -> str:
    return _settings().replace(SHIPPED_BRANCHES, f"branches = {json.dumps(['drm-tip', branch])}", 1)


def test_a_watched_branch_longer_than_an_image_name_allows_is_refused(tmp_path):
    """The hole: a branch name could have 200 characters, but it is part of every image name
    (``<kernel release>-<branch>_<sha6>_<yyyymmdd>_+``), which the image tree's readers refuse past 200: every
    build of the branch compiled for nothing, and its images could not be listed."""
    assert SHIPPED_BRANCHES in SHIPPED
    branch = "feature/" + "x" * (MAX_BRANCH_CHARS - 7)
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(_with_branch(branch), str(tmp_path / "settings.toml"))
    msg = str(e.value)
    assert f"is {MAX_BRANCH_CHARS + 1} characters long; a watched branch may have at most {MAX_BRANCH_CHARS}" in msg
    assert "kernel release" in msg and branch not in msg  # the start of it only
    ok = settings.parse(_with_branch(branch[:-1]), str(tmp_path / "settings.toml"))
    assert ok.repositories[0].branches == ("drm-tip", branch[:-1])


def test_an_image_name_too_long_for_the_tree_is_refused_when_it_is_made():
    """A branch from elsewhere, or long localversion files: the name is refused before the build (the
    kernel-facts step fails naming it), not after it, when the tree's readers would drop the image."""
    with pytest.raises(NameError_, match="the image name would be 214 characters long, over the 200"):
        image_name("6.1.0", "b" * 190, SHA, 1374190200, at_release_tag=False)
    assert len(image_name("6.1.0" + "-r" * 38, "b" * MAX_BRANCH_CHARS, SHA, 1374190200, at_release_tag=False)) == 200
