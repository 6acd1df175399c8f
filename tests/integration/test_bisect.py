"""The bisect builder on a real master and worker: a planted regression found over the REST API.

Fixture history on drm-intel-fixes (C0 is the initial tree)::

    C0 - C1 - C2 - C3 - C4 - C5(REGRESSION) - C6 - C7 - C8

C2, C6 and C8 get images through the normal pipeline (pushed one after the other, each head is built);
the rest are built on demand by the bisect. The test command is the local-command tester's contract:
``! grep -q REGRESSION "$BISECT_IMAGE_DIR/vmlinuz"`` (the fixture's vmlinuz holds the compiled objects).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.pg import DB_BACKENDS, db_url_for

from .harness import FixtureRepo, Master, Worker, bisect_build, free_port, git, settings_text, wait_for

pytestmark = pytest.mark.integration
BRANCH = "drm-intel-fixes"
CHECK = '! grep -q REGRESSION "$BISECT_IMAGE_DIR/vmlinuz"'
SUCCESS, WARNINGS, FAILURE = 0, 1, 2
# a named test whose command outlives its timeout: killed, and a skip
TESTS = '[[test]]\nname = "too-slow"\ncommand = "sleep 60"\nmode = "test"\ntimeout = 2\n'
# on PostgreSQL: the bisect over REST and the restart that resumes it; the rest is database-neutral
PG_SUBSET = {"test_bisect_finds_the_planted_regression", "test_restart_resumes_without_repeating_a_finished_step"}


@pytest.fixture(autouse=True)
def _pg_subset(request):
    callspec = getattr(request.node, "callspec", None)
    if callspec and callspec.params.get("farm") == "pg" and request.node.originalname not in PG_SUBSET:
        pytest.skip("database-neutral: runs on SQLite only (the PostgreSQL run keeps to the bisect and its restart)")


@pytest.fixture(scope="module", params=DB_BACKENDS)
def farm(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"bisect-{request.param}")
    repo = FixtureRepo(base, (BRANCH,))
    shas = repo.plant_regression(BRANCH, 8, culprit=5)
    git(repo.work, "push", "-q", "origin", f"{shas[2]}:refs/heads/{BRANCH}")
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    db_url = db_url_for(request, "bisect")
    master = Master(base, settings_text(str(repo.bare), (BRANCH,), ports, max_builds=3, extra=TESTS,
                                        db_url=db_url), upgrade=db_url is not None)
    worker = Worker(base, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    worker.start()
    wait_for(lambda: image_shas(master) >= {shas[2]}, 120, "the head image of C2")
    for i in (6, 8):  # prebuilt images, through the pipeline: push, poll, build, publish
        git(repo.work, "push", "-q", "origin", f"{shas[i]}:refs/heads/{BRANCH}")
        wait_for(lambda i=i: shas[i] in image_shas(master), 120, f"the head image of C{i}")
    wait_for(master.idle, 60, "the pipeline to be idle")
    yield repo, master, worker, shas, base
    worker.stop()
    master.stop()


def image_shas(master) -> set[str]:
    d = master.dir / "images" / BRANCH
    return {json.loads(m.read_text())["sha"] for m in d.glob("*/metadata.json")} if d.is_dir() else set()


def force_bisect(master, **params) -> int:
    return master.force("bisect", {"target": BRANCH, "tester": "local", "command": CHECK, "mode": "test",
                                   "build_missing": True, "build_config": "x86_64", "max_steps": 0, **params})


def bisect_dir(master, build) -> object:
    return master.dir / "state" / "bisects" / build["properties"]["bisect_id"][0]


def step_strings(master, build) -> list[str]:
    return [s["state_string"] for s in master.steps(build["buildid"])]


def test_bisect_finds_the_planted_regression(farm):
    repo, master, _, shas, base = farm
    prebuilt = image_shas(master)
    out = base / "env.log"
    command = f'env | grep ^BISECT_ | sort >> {out}; echo --- >> {out}; echo "tested $BISECT_SHA"; {CHECK}'
    bsid = force_bisect(master, good=shas[0], bad=shas[8], command=command)
    build = bisect_build(master, bsid)
    assert build["results"] == SUCCESS, step_strings(master, build)
    culprit = shas[5]
    assert f"first bad commit {culprit[:12]}: drm/i915: change 5 (Fixture Dev" in build["state_string"]
    result = json.loads((bisect_dir(master, build) / "result.json").read_text())
    assert result["status"] == "done" and result["first_bad"]["sha"] == culprit
    assert result["verified"] is True and [v["sha"] for v in result["verification"]] == [culprit, shas[4]]
    assert result["first_bad"]["subject"] == "drm/i915: change 5"
    assert result["last_good"]["sha"] == shas[4]
    # the on-demand builds published their images for everyone
    on_demand = image_shas(master) - prebuilt
    assert on_demand and on_demand <= set(shas[1:8])
    built = {s["build"]["sha"] for s in result["steps"] if s["build"]}
    assert built <= image_shas(master)
    assert result["builds"] >= len(on_demand)  # every image built for it, ahead builds too
    # while a step was tested, the next midpoints were built ahead on the free worker slots
    assert any(s.get("ahead") for s in result["steps"])
    tested = [s["sha"] for s in result["steps"]]
    assert len(tested) == len(set(tested)) and {culprit, shas[4]} <= set(tested)
    # one UI step per bisect step, with its verdict
    strings = step_strings(master, build)
    assert any(s.startswith("step 1/~") and ": test " in s and s.endswith(("good", "bad")) for s in strings)
    urls = [u["name"] for s in master.steps(build["buildid"]) for u in s["urls"]]
    # a verdict is data: a bad commit's test build is not red; each step links it and shows its output
    for s in result["steps"]:
        test_build = master.get(f"builds/{s['test_build']}")["builds"][0]
        assert test_build["results"] == SUCCESS and test_build["state_string"] != "failed", test_build
        assert f"test {s['sha'][:12]}: {s['verdict']}" in urls and s["test_build_url"].endswith(
            f"/builds/{test_build['number']}")
        [step] = [st for st in master.steps(build["buildid"]) if st["name"] == f"step-{s['n']}"]
        [log] = [lg for lg in master.get(f"steps/{step['stepid']}/logs")["logs"]
                 if lg["name"] == f"{s['sha'][:12]} {s['verdict']}"]
        excerpt = master.get(f"logs/{log['logid']}/contents")
        assert f"tested {s['sha']}" in "".join(c["content"] for c in excerpt["logchunks"])
    assert "bad" in {s["verdict"] for s in result["steps"]}
    # the start step's "mirror" log says where the mirror clone is and that it is ready
    start = next(s for s in master.steps(build["buildid"]) if s["name"] == "start")
    chunks = master.get(f"steps/{start['stepid']}/logs/mirror/contents")["logchunks"]
    mirror_log = "".join(c["content"] for c in chunks)
    assert " into the mirror " in mirror_log and "/state/bisect-mirrors/" in mirror_log, mirror_log
    assert mirror_log.rstrip().endswith("mirror up to date"), mirror_log
    assert any(u.startswith("first bad: ") for u in urls) and any(u.startswith("last good: ") for u in urls)
    # bisect.log replays in a fresh clone to the same culprit
    log = (bisect_dir(master, build) / "bisect.log").read_text()
    assert f"# first bad commit: [{culprit}]" in log
    clone = base / "replay"
    git(base, "clone", "-q", "-b", BRANCH, str(repo.bare), str(clone))
    (base / "replay.log").write_text(log)
    git(clone, "bisect", "replay", str(base / "replay.log"))
    assert git(clone, "rev-parse", "refs/bisect/bad") == culprit
    # the tester's environment (contract), for one of the tests
    env = dict(line.split("=", 1) for line in out.read_text().split("---\n")[0].splitlines())
    assert env["BISECT_SHA"] in shas and env["BISECT_IMAGE"] in env["BISECT_IMAGE_URL"]
    assert env["BISECT_IMAGE_URL"].startswith(f"http://127.0.0.1:{master_image_port(master)}/{BRANCH}/")
    assert env["BISECT_IMAGE_DIR"].startswith("/") and env["BISECT_IMAGE_DIR"].endswith("/bisect/image")
    assert not (bisect_dir(master, build) / "pins").exists()


def images_by_sha(master) -> dict[str, dict]:
    d = master.dir / "images" / BRANCH
    return {m["sha"]: m for m in (json.loads(p.read_text()) for p in d.glob("*/metadata.json"))}


def test_on_demand_builds_change_neither_latest_nor_the_branch_builder(farm):
    """The bisect's builds run on their own builder (same work tree on the worker, no second checkout),
    their images are marked on_demand, and ``latest`` and ``head: true`` stay on the head's image: a lab
    that boots ``latest`` still gets the head after a bisect built older commits."""
    _, master, worker, shas, _ = farm
    bsid = force_bisect(master, good=shas[0], bad=shas[8])  # builds what an earlier bisect did not
    assert bisect_build(master, bsid)["results"] == SUCCESS
    wait_for(master.idle, 60, "the bisect's builds to finish")
    bisect_builder = f"bisect-build-{BRANCH}"
    on_demand_builds = [b for b in master.builds(bisect_builder) if b["results"] == SUCCESS]
    built = {b["properties"]["commit_sha"][0] for b in on_demand_builds if "commit_sha" in b["properties"]}
    assert built and built <= set(shas[1:8]) - {shas[2], shas[6]}
    assert all(b["properties"]["on_demand"][0] is True for b in on_demand_builds)
    # the branch builder only ever built the pushed heads; its last build (its colour) is the head's
    branch_builds = master.builds(BRANCH)
    assert [b["properties"]["commit_sha"][0] for b in branch_builds if b["results"] == SUCCESS] == \
        [shas[2], shas[6], shas[8]]
    assert branch_builds[-1]["results"] == SUCCESS and branch_builds[-1]["properties"]["commit_sha"][0] == shas[8]
    # the images: bisect ones marked, the head's is latest and the only head: true
    meta = images_by_sha(master)
    assert {s for s, m in meta.items() if m.get("on_demand")} == built
    head_name = meta[shas[8]]["name"]
    assert (master.dir / "images" / BRANCH / "latest").read_text().strip() == head_name
    with urllib.request.urlopen(f"http://127.0.0.1:{master_image_port(master)}/{BRANCH}/latest", timeout=10) as r:
        assert r.read().decode().strip() == head_name
    for path in (master.dir / "images" / "index.json", master.dir / "images" / BRANCH / "index.json"):
        entries = json.loads(path.read_text())["images"]
        assert [e["name"] for e in entries if e["head"]] == [head_name], path
        assert entries[0]["name"] == head_name  # then the history's order: C7 before C6 ... before C1
        order = [shas.index(e["sha"]) for e in entries]
        assert order == sorted(order, reverse=True), order
        assert {e["sha"] for e in entries if e["on_demand"]} == built
    # no (sha, build config) was built twice, across the two builders
    published = [s["state_string"] for b in branch_builds + master.builds(bisect_builder)
                 for s in master.steps(b["buildid"]) if s["name"] == "publish" and s["results"] == SUCCESS]
    published = [text for text in published if text.startswith("published ")]
    assert len(published) == len(set(published)) == len(meta), published
    # one kernel work tree per branch on the worker: the bisect builder shares the branch builder's
    assert not (worker.dir / bisect_builder).exists() and (worker.dir / BRANCH / "work").is_dir()


def master_image_port(master) -> int:
    for line in (master.dir / "settings.toml").read_text().splitlines():
        if line.startswith("image_port"):
            return int(line.split("=")[1])
    raise AssertionError("no image_port")


@pytest.mark.parametrize("params, field", [
    ({"bad": "0123456789abcdef0123"}, "bad"),
    ({"good": "no-such-branch"}, "good"),
    ({"swap": True}, "good"),  # good not an ancestor of bad
    ({"same": True}, "good"),  # good == bad
    ({"target": "drm-tip"}, "target"),
    ({"build_config": "arm64"}, "build_config"),
    ({"command": ""}, "test"),  # neither a named test nor a command
    ({"command": "", "test": "no-such-test"}, "test"),
])
def test_bad_input_is_refused_naming_the_field(farm, params, field):
    _, master, _, shas, _ = farm
    params = dict(params)
    good, bad = shas[0], shas[8]
    if params.pop("swap", False):
        good, bad = shas[8], shas[2]
    if params.pop("same", False):
        good = bad
    before = set((master.dir / "state" / "bisects").glob("*"))
    bsid = force_bisect(master, **{"good": good, "bad": bad, **params})
    build = bisect_build(master, bsid, timeout=60)
    assert build["results"] == FAILURE
    assert f"refused: {field}: " in build["state_string"], build["state_string"]
    assert set((master.dir / "state" / "bisects").glob("*")) == before  # no state left behind


def test_form_refuses_a_malformed_number(farm):
    _, master, _, shas, _ = farm
    with pytest.raises(urllib.error.HTTPError) as e:
        force_bisect(master, good=shas[0], bad=shas[8], max_steps="many")
    assert e.value.code == 400 and b"max_steps" in e.value.read()


def test_restart_resumes_without_repeating_a_finished_step(farm):
    """The master stops while step 2 is being tested; after the restart the build request is retried,
    the bisect resumes from its log at step 2, and step 1 is not tested again."""
    _, master, _, shas, base = farm
    started, gate = base / "restart-started.log", base / "restart-gate"
    hold = (f'echo "$BISECT_SHA" >> {started}; if [ "$(wc -l < {started})" -eq 2 ]; then i=0; '
            f'while [ ! -e {gate} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; fi; {CHECK}')
    bsid = force_bisect(master, good=shas[0], bad=shas[8], command=hold)
    wait_for(lambda: started.exists() and len(started.read_text().split()) == 2, 120,
             "the second test to start")
    master.stop()
    first = started.read_text().split()[0]
    ident = next(p for p in (master.dir / "state" / "bisects").iterdir()
                 if json.loads((p / "request.json").read_text())["command"] == hold)
    assert [line.split()[-1] for line in (ident / "bisect.log").read_text().splitlines()
            if line.startswith("git bisect good") or line.startswith("git bisect bad")] == [first]
    gate.touch()
    master.start(master.web_port)
    build = bisect_build(master, bsid)
    assert build["results"] == SUCCESS, step_strings(master, build)
    assert f"first bad commit {shas[5][:12]}" in build["state_string"]
    reqs = master.get(f"buildrequests?buildsetid={bsid}")["buildrequests"]
    runs = master.get(f"builds?buildrequestid={reqs[0]['buildrequestid']}&order=buildid")["builds"]
    assert [b["results"] for b in runs] == [5, SUCCESS]  # RETRY at the shutdown, then the resumed run
    assert any(s.startswith("resumed ") and " at step 2:" in s for s in step_strings(master, build))
    tests = started.read_text().split()
    assert tests[-2:] == [shas[5], shas[4]]  # the culprit verified: tested again, and its parent
    assert tests[:-2].count(first) == 1  # the finished step 1 was not run again
    verdicts = [line.split()[-1] for line in (ident / "bisect.log").read_text().splitlines()
                if line.startswith("git bisect ") and not line.startswith("git bisect start")]
    assert len(verdicts) == len(set(verdicts))
    steps = [s["n"] for s in json.loads((ident / "result.json").read_text())["steps"]]
    assert steps == list(range(1, len(steps) + 1))


def test_a_broken_test_command_aborts_instead_of_guessing(farm):
    """Exit status above 127 (as for git bisect run): the bisect stops with an error, no verdict recorded."""
    _, master, _, shas, _ = farm
    bsid = force_bisect(master, good=shas[0], bad=shas[8], command="exit 130")
    build = bisect_build(master, bsid, timeout=60)
    assert build["results"] == FAILURE
    assert "aborted: step 1, " in build["state_string"] and "status 130" in build["state_string"]
    d = bisect_dir(master, build)
    result = json.loads((d / "result.json").read_text())
    assert result["status"] == "aborted" and result["steps"] == [] and result["first_bad"] is None
    assert "git bisect bad" not in (d / "bisect.log").read_text()
    assert not (d / "pins").exists()


def test_a_cancelled_bisect_ends_aborted_and_unpins(farm):
    _, master, _, shas, base = farm
    began, gate = base / "cancel-began", base / "cancel-gate"  # the gate never opens: only a stop ends it
    hold = f'touch {began}; i=0; while [ ! -e {gate} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; {CHECK}'
    bsid = force_bisect(master, good=shas[0], bad=shas[8], command=hold)
    wait_for(began.exists, 60, "the first test to start")
    running = [b for b in master.builds("bisect") if not b["complete"]]
    assert len(running) == 1
    d = master.dir / "state" / "bisects" / running[0]["properties"]["bisect_id"][0]
    assert (d / "pins").read_text().strip()  # the images of the range are pinned while it runs
    master.post_json(f"builds/{running[0]['buildid']}",
                     {"jsonrpc": "2.0", "method": "stop", "id": 1, "params": {"reason": "not needed"}})
    build = bisect_build(master, bsid, timeout=60)
    assert build["results"] == 6  # CANCELLED
    result = json.loads((d / "result.json").read_text())
    assert result["status"] == "aborted" and "not needed" in result["reason"]
    assert not (d / "pins").exists()
    wait_for(master.idle, 30, "the test build to be cancelled too")
    tests = [b for b in master.builds("bisect-test") if b["properties"].get("bisect_id", [None])[0] == d.name]
    assert [b["results"] for b in tests] == [6]


def test_max_steps_ends_with_the_proven_range(farm):
    _, master, _, shas, _ = farm
    bsid = force_bisect(master, good=shas[0], bad=shas[8], max_steps=1)
    build = bisect_build(master, bsid, timeout=90)
    assert build["results"] == WARNINGS, step_strings(master, build)
    result = json.loads((bisect_dir(master, build) / "result.json").read_text())
    assert result["status"] == "max-steps" and result["tests"] == 1 and result["first_bad"] is None
    assert result["verified"] is None and result["verification"] == []  # no culprit: nothing to verify
    assert shas[5] in result["candidates"] and len(result["candidates"]) < 8
    assert f"first bad commit is one of {len(result['candidates'])}: " in build["state_string"]


def test_a_named_test_past_its_timeout_is_killed_and_a_skip(farm):
    _, master, _, shas, _ = farm
    bsid = force_bisect(master, good=shas[0], bad=shas[8], command="", test="too-slow", max_steps=1)
    build = bisect_build(master, bsid, timeout=90)
    d = bisect_dir(master, build)
    assert json.loads((d / "request.json").read_text())["timeout"] == 2
    steps = [json.loads(line) for line in (d / "steps.jsonl").read_text().splitlines()]
    assert [s["verdict"] for s in steps] == ["skip"] and steps[0]["test_seconds"] < 30
    tests = [b for b in master.builds("bisect-test") if b["properties"].get("bisect_id", [None])[0] == d.name]
    strings = [s["state_string"] for s in master.steps(tests[0]["buildid"])]
    assert steps[0]["exit_status"] == 125 and any(x.startswith("killed at the timeout: skip") for x in strings)
