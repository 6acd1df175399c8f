"""The regression watch on a real master and worker: nobody fills a form.

drm-intel-fixes, watched by the test "check" (local tester)::

    C0 - C1 - C2 - C3(REGRESSION) - C4 - C5          pushed at once: only the head C5 is built
                                            - C6     a second push: a new bad head, same regression

C0's image passes, C5's fails (twice: the re-run), a bisect starts by itself (good C0, bad C5), names
C3 and verifies it (C3 bad again, C2 good).  C6 fails too, but its nearest tested ancestor (C5) already
failed: no second bisect.

drm-intel-next, watched by "coin", a test that fails half the time (a counter file decides, so the
run is reproducible: pass, fail, fail, pass, ...): its first image passes, the next fails and fails
again, the bisect's culprit passes when verified, and the bisect ends "flaky", never with a culprit.

Both branches' histories are pushed at once, so the two scenarios run side by side.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from .harness import FixtureRepo, Master, Worker, bisect_build, free_port, settings_text, wait_for

pytestmark = pytest.mark.integration
FIXES, NEXT = "drm-intel-fixes", "drm-intel-next"
CHECK = 'echo "checking $BISECT_SHA"; ! grep -q REGRESSION "$BISECT_IMAGE_DIR/vmlinuz"'


def watch_settings(counter) -> str:
    # pass, fail, fail, pass, pass, fail, fail, pass, ...: half of the runs fail
    coin = f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; test $(( (n+1) / 2 % 2 )) -eq 0'
    return (f"[[test]]\nname = \"check\"\ncommand = '{CHECK}'\nmode = \"test\"\nbranches = [\"{FIXES}\"]\n"
            "testers = [\"local\"]\ntimeout = 60\n"
            f"[[test]]\nname = \"coin\"\ncommand = '{coin}'\nmode = \"test\"\nbranches = [\"{NEXT}\"]\n"
            "testers = [\"local\"]\ntimeout = 60\n")


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """Both branches' first images tested, then both histories pushed at once: the two scenarios run
    side by side."""
    base = tmp_path_factory.mktemp("loop")
    repo = FixtureRepo(base, (FIXES, NEXT))
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    master = Master(base, settings_text(str(repo.bare), (FIXES, NEXT), ports, max_builds=3,
                                        extra=watch_settings(base / "coin-counter")))
    worker = Worker(base, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    worker.start()
    c0 = repo.head(FIXES)
    wait_for(lambda: result_of(master, FIXES, c0, "check") == "pass", 180, "C0's image to pass 'check'")
    wait_for(lambda: result_of(master, NEXT, c0, "coin") == "pass", 180, "C0's image to pass 'coin'")
    fixes = repo.plant_regression(FIXES, 5, culprit=3)
    nxt = [c0, repo.commit_file(NEXT, "drivers/gpu/next1.c", "int next1(void) { return 1; }\n", "drm/i915: next 1")]
    repo.push(FIXES)
    repo.push(NEXT)
    yield repo, master, fixes, nxt
    worker.stop()
    master.stop()


def entries(master, branch: str) -> list[dict]:
    p = master.dir / "images" / branch / "index.json"
    return json.loads(p.read_text())["images"] if p.is_file() else []


def result_of(master, branch: str, sha: str, test: str) -> str | None:
    for e in entries(master, branch):
        if e["sha"] == sha:
            return e.get("tests", {}).get(test, {}).get("result")
    return None


def regression_bisects(master, test: str, branch: str) -> list[dict]:
    return [b for b in master.builds("bisect")
            if b["properties"].get("owner", [""])[0].startswith(f"regression-watch: {test} on {branch} (")]


def bisect_result(master, build) -> dict:
    return json.loads((master.dir / "state" / "bisects" / build["properties"]["bisect_id"][0]
                       / "result.json").read_text())


def buildset_of(master, build) -> int:
    return master.get(f"buildrequests/{build['buildrequestid']}")["buildrequests"][0]["buildsetid"]


def test_a_pushed_regression_is_found_bisected_and_verified(loop):
    repo, master, shas, _ = loop
    c0 = shas[0]
    root_entry = next(e for e in json.loads((master.dir / "images" / "index.json").read_text())["images"]
                      if e["sha"] == c0 and e["branch"] == FIXES)
    check = root_entry["tests"]["check"]
    assert check["result"] == "pass" and check["machine"] == "local" and check["date"].endswith("Z")
    assert check["log_url"] == root_entry["url"] + "tests/check.log"
    with urllib.request.urlopen(check["log_url"], timeout=10) as r:  # served with the image
        text = r.read().decode()
    assert '"exit_status": 0' in text and f"checking {c0}" in text
    assert "BISECT_IMAGE_DIR=" not in text and "PATH=" not in text  # not the worker's environment

    wait_for(lambda: result_of(master, FIXES, shas[5], "check") == "fail", 180, "C5's image to fail 'check'")
    n_entry = next(e for e in entries(master, FIXES) if e["sha"] == shas[5])
    assert n_entry["tests"]["check"]["rerun"] == "fail"  # re-run once before a bisect starts

    bisects = wait_for(lambda: regression_bisects(master, "check", FIXES), 60, "the unattended bisect")
    assert len(bisects) == 1
    owner = bisects[0]["properties"]["owner"][0]
    assert owner == f"regression-watch: check on {FIXES} ({c0[:12]} pass, {shas[5][:12]} fail)"
    build = bisect_build(master, buildset_of(master, bisects[0]), timeout=240)
    assert build["results"] == 0, build["state_string"]
    result = bisect_result(master, build)
    assert result["status"] == "done" and result["first_bad"]["sha"] == shas[3]
    assert result["verified"] is True
    assert [(v["role"], v["sha"], v["verdict"]) for v in result["verification"]] == [
        ("culprit", shas[3], "bad"), ("parent", shas[2], "good")]
    assert result["request"]["test"] == "check" and result["request"]["tester"] == "local"
    assert result["request"]["good"] == [c0] and result["request"]["bad"] == shas[5]
    assert f"first bad commit {shas[3][:12]}" in build["state_string"] and "(verified)" in build["state_string"]

    # the build that detected it carries the regression for the notifier
    detector = next(b for b in master.builds("image-test")
                    if b["properties"].get("regression", [{}])[0].get("test") == "check")
    reg = detector["properties"]["regression"][0]
    assert reg["test"] == "check" and reg["branch"] == FIXES and reg["tester"] == "local"
    assert reg["good"]["sha"] == c0 and reg["bad"]["sha"] == shas[5]
    assert reg["good"]["image"] and reg["bad"]["url"] == n_entry["url"]
    assert reg["bisect"]["buildset"] == buildset_of(master, bisects[0])

    # a second push: a new bad head on top of the known bad one starts no second bisect
    shas.append(repo.commit_file(FIXES, "drivers/gpu/part6.c", "int part6(void) { return 6; }\n",
                                 "drm/i915: change 6"))
    repo.push(FIXES)
    wait_for(lambda: result_of(master, FIXES, shas[6], "check") == "fail", 180, "C6's image to fail 'check'")
    wait_for(master.idle, 120, "the master to be idle")
    assert len(regression_bisects(master, "check", FIXES)) == 1
    c6 = next(e for e in entries(master, FIXES) if e["sha"] == shas[6])
    assert "rerun" not in c6["tests"]["check"]  # already failing before: not even re-run
    # C5 tested again from the form: a pass before it, two fails, but its bisect was claimed already
    bsid = master.force("test-image", {"image_test": "check", "image_name": n_entry["name"]})
    again = bisect_build(master, bsid, timeout=120)
    assert again["results"] == 2 and "was already started" in again["state_string"], again["state_string"]
    assert len(regression_bisects(master, "check", FIXES)) == 1
    bsid = master.force("test-image", {"image_test": "check", "image_name": "no-such-image"})
    assert "image_name: no image named 'no-such-image'" in bisect_build(master, bsid, timeout=60)["state_string"]
    # the branch page shows the results
    page = (master.dir / "images" / FIXES / "index.html").read_text()
    assert "check: fail" in page and "check: pass" in page


def test_a_flaky_test_never_names_a_verified_culprit(loop):
    repo, master, _, (d0, d1) = loop
    wait_for(lambda: result_of(master, NEXT, d1, "coin") == "fail", 180, "the next image to fail 'coin'")
    bisects = wait_for(lambda: regression_bisects(master, "coin", NEXT), 60, "the coin bisect")
    build = bisect_build(master, buildset_of(master, bisects[0]), timeout=180)
    result = bisect_result(master, build)
    assert result["status"] == "flaky" and result["first_bad"] is None and result["verified"] is False
    assert result["candidates"] == [d1] and "does not reproduce" in result["reason"]
    assert result["verification"][0] == {"role": "culprit", "sha": d1, "expected": "bad", "verdict": "good"}
    assert build["results"] == 1 and "flaky, no culprit" in build["state_string"]
