"""Debian's headless Chromium against a real master: the Kernels dashboard, a branch build, a finished bisect.

History (C0 is the fixture's initial tree)::

    drm-intel-fixes  C0 - C1 - C2 - C3(REGRESSION) - C4 - C5(subject holds a <script>)
    drm-intel-next   C0 - X(does not compile)

C5 and drm-intel-next's C0 get images through the pipeline; a bisect C0..C5 is forced over REST and builds the rest on
demand.  drm-intel-next's head fails to build: the dashboard must still list it, with the compiler error.
Screenshots go to $BBK_ARTIFACTS (or pytest's tmp dir); the path is printed.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.integration.harness import FixtureRepo, Master, Worker, free_port, git, settings_text, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]
FIXES, NEXT = "drm-intel-fixes", "drm-intel-next"
WEB_URL = "https://git.example.org/drm/linux/-/commit/{sha}"
CHECK = '! grep -q REGRESSION "$BISECT_IMAGE_DIR/vmlinuz"'
HOSTILE = "drm/i915: <script>window.pwned=1</script> change 5"
HEAD, CULPRIT = 5, 3  # indexes into the history above
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SUCCESS, FAILURE = 0, 2

webdriver = pytest.importorskip("selenium.webdriver")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/install-deps installs them)",
                allow_module_level=True)
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


def image_shas(master, branch) -> set[str]:
    d = master.dir / "images" / branch
    return {json.loads(m.read_text())["sha"] for m in d.glob("*/metadata.json")} if d.is_dir() else set()


def quietly(predicate):
    """A busy master's REST API has been seen to drop a response half-way (IncompleteRead) on this
    shared machine: a poll that hits that asks again instead of failing the test."""
    def poll():
        try:
            return predicate()
        except (OSError, http.client.HTTPException):
            return None
    return poll


def next_failed(master) -> bool:
    builds = master.get(f"builders/{master.builder_id(NEXT)}/builds")["builds"]
    return any(b["complete"] and b["results"] == FAILURE for b in builds)


def finished_build(master, bsid: int):
    reqs = master.get(f"buildrequests?buildsetid={bsid}")["buildrequests"]
    if not reqs or not reqs[0]["complete"]:
        return None
    builds = master.get(f"builds?buildrequestid={reqs[0]['buildrequestid']}")["builds"]
    return builds[-1] if builds and builds[-1]["complete"] else None


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = Path(os.environ["BBK_ARTIFACTS"]) if os.environ.get("BBK_ARTIFACTS") else tmp_path_factory.mktemp("shots")
    d.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {d}")
    return d


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    repo = FixtureRepo(base, (FIXES, NEXT))
    shas = [repo.head(FIXES)]
    for i in range(1, HEAD + 1):
        if i == CULPRIT:
            path, text = "drivers/gpu/i915.c", ('/* fixture */\nconst char i915_state[] = "i915 REGRESSION";\n'
                                                'int i915_init(void) { return 0; }\n')
        else:
            path, text = f"drivers/gpu/part{i}.c", f"int part{i}(void) {{ return {i}; }}\n"
        shas.append(repo.commit_file(FIXES, path, text, HOSTILE if i == HEAD else f"drm/i915: change {i}"))
    git(repo.work, "push", "-q", "origin", f"{shas[HEAD]}:refs/heads/{FIXES}")
    ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
    text = settings_text(str(repo.bare), (FIXES, NEXT), ports, max_builds=3)
    text = text.replace('build = "x86_64"\n[[build]]', f'build = "x86_64"\nweb_url = "{WEB_URL}"\n[[build]]', 1)
    master = Master(base, text)
    worker = Worker(base, "w1", "pw", ports["worker"])
    master.start(ports["web"])
    worker.start()
    try:
        wait_for(lambda: image_shas(master, NEXT), 120, "the image of drm-intel-next's first head")
        broken = repo.commit_file(NEXT, "drivers/gpu/i915.c", "int i915_init(void) { return oops; }\n",
                                  "drm/i915: break the build")
        repo.push(NEXT)
        wait_for(lambda: shas[HEAD] in image_shas(master, FIXES), 120, "the head image")
        bsid = master.force("bisect", {"target": FIXES, "tester": "local", "command": CHECK, "mode": "test",
                                       "build_missing": True, "build_config": "x86_64", "max_steps": 0,
                                       "good": shas[0], "bad": shas[HEAD]})
        bisect = wait_for(quietly(lambda: finished_build(master, bsid)), 240, "the bisect to finish")
        assert bisect["results"] == SUCCESS, bisect["state_string"]
        wait_for(quietly(lambda: next_failed(master)), 120, "drm-intel-next's broken head to fail")
        wait_for(quietly(master.idle), 120, "the pipeline to finish")
        yield repo, master, shas, broken, bisect
    finally:
        worker.stop()
        master.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def shot(driver, artifacts: Path, name: str, full_page: bool = False):
    """Save a PNG; ``full_page`` grows the window to the document's height first."""
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(max(1000, height + 40), 6000))
    path = artifacts / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    print(f"screenshot: {path}")
    return path


def rendered(driver) -> str | None:
    """The page's "rendered at" time, or None while it is being replaced."""
    try:
        return driver.find_element(By.ID, "rendered").text
    except WebDriverException:
        return None


def web(master) -> str:
    return f"http://127.0.0.1:{master.web_port}/"


def wait_text(driver, text: str, timeout: float = 30):
    return wait_for(lambda: text in driver.find_element(By.TAG_NAME, "body").text, timeout, f"{text!r} on the page")


def commit_url(sha: str) -> str:
    return WEB_URL.replace("{sha}", sha)


def test_dashboard_in_the_web_ui_shows_heads_bisect_and_links(farm, browser, artifacts):
    repo, master, shas, broken, bisect = farm
    browser.get(web(master) + "#/kernels")
    frame = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "iframe[title='Kernels dashboard']"), 30,
                     "the dashboard frame in the web UI")[0]
    browser.switch_to.frame(frame)
    wait_text(browser, "Bisects")
    browser.switch_to.default_content()
    shot(browser, artifacts, "01-kernels-in-buildbot-ui")
    browser.switch_to.frame(frame)
    assert browser.find_elements(By.CSS_SELECTOR, "meta[http-equiv='refresh']")  # refreshes itself
    # the fixes branch: its head, linked, subject shown as text (never run), built, its image
    row = browser.find_element(By.CSS_SELECTOR, f"tr.branch[data-branch='{FIXES}']")
    link = row.find_element(By.CSS_SELECTOR, "a.sha")
    assert link.text == shas[HEAD][:12] and link.get_attribute("href") == commit_url(shas[HEAD])
    assert HOSTILE in row.text
    assert browser.execute_script("return window.pwned === undefined")
    assert "success" in row.text
    head_image = [p.name for p in (master.dir / "images" / FIXES).iterdir()
                  if p.is_dir() and json.loads((p / "metadata.json").read_text())["sha"] == shas[HEAD]][0]
    assert row.find_element(By.CSS_SELECTOR, "a.image-link").text == head_image
    fixes_build_url = row.find_element(By.CSS_SELECTOR, "a.build-link").get_attribute("href")
    # the next branch: its head does not build and is listed anyway, with the compiler's first error
    row = browser.find_element(By.CSS_SELECTOR, f"tr.branch[data-branch='{NEXT}']")
    assert row.find_element(By.CSS_SELECTOR, "a.sha").text == broken[:12]
    assert "failure" in row.text and "i915.c" in row.text and "oops" in row.text
    assert "an older commit" in row.text  # its newest image is C0's
    # Buildbot's own revlink: the push's change links the commit ([[repository]] web_url)
    change = next(c for c in master.get("changes")["changes"] if c["revision"] == broken)
    assert change["revlink"] == commit_url(broken)
    # the bisect: range, status, culprit linked, links to its build, result.json and images
    row = browser.find_element(By.CSS_SELECTOR, "tr.bisect")
    assert row.find_element(By.CSS_SELECTOR, "td.range").text == f"{shas[0][:12]}..{shas[HEAD][:12]}"
    assert "culprit found" in row.text
    culprit = row.find_element(By.CSS_SELECTOR, "td.culprit a.sha")
    assert culprit.text == shas[CULPRIT][:12] and culprit.get_attribute("href") == commit_url(shas[CULPRIT])
    assert f"drm/i915: change {CULPRIT}" in row.text
    build_link = row.find_element(By.CSS_SELECTOR, "a.build-link").get_attribute("href")
    assert build_link.endswith(f"#/builders/{bisect['builderid']}/builds/{bisect['number']}")
    result_url = row.find_element(By.CSS_SELECTOR, "a.result-link").get_attribute("href")
    with urllib.request.urlopen(result_url, timeout=10) as r:
        assert json.load(r)["first_bad"]["sha"] == shas[CULPRIT]
    images = [a.get_attribute("href") for a in row.find_elements(By.CSS_SELECTOR, "a.image-link")]
    assert any(f"/{FIXES}/" in u for u in images) and len(images) == 2
    for u in images:
        with urllib.request.urlopen(u + "metadata.json", timeout=10) as r:
            assert json.load(r)["sha"] in (shas[CULPRIT - 1], shas[CULPRIT])
    # charts: one line per branch and the bisect's steps, inline SVG without script
    durations = browser.find_element(By.ID, "plot-durations")
    assert FIXES in durations.text and NEXT in durations.text
    # one dot per branch build: the head builds of both branches and the failed one, not the bisect's
    assert len(durations.find_elements(By.CSS_SELECTOR, "circle.dot")) == 3
    assert browser.find_elements(By.CSS_SELECTOR, "#plot-bisects svg .series")
    assert not browser.find_elements(By.CSS_SELECTOR, "script")
    browser.switch_to.default_content()
    # the same page on its own, whole; it reloads itself (every 2 s here instead of 30)
    browser.get(web(master) + "plugins/wsgi_dashboards/kernels/page.html?refresh=2")
    first = rendered(browser)
    wait_for(lambda: rendered(browser) not in (None, first), 20, "the page to reload itself")
    shot(browser, artifacts, "02-kernels-dashboard-full", full_page=True)
    assert fixes_build_url.startswith(web(master) + "#/builders/")


def test_branch_build_page_shows_the_head(farm, browser, artifacts):
    repo, master, shas, _, _ = farm
    browser.get(web(master) + "plugins/wsgi_dashboards/kernels/page.html")
    browser.find_element(By.CSS_SELECTOR, f"tr.branch[data-branch='{FIXES}'] a.build-link").click()
    wait_for(lambda: "#/builders/" in browser.current_url, 30, "the link to open the build in the web UI")
    head_image = [p.name for p in (master.dir / "images" / FIXES).iterdir()
                  if p.is_dir() and json.loads((p / "metadata.json").read_text())["sha"] == shas[HEAD]][0]
    wait_text(browser, head_image)  # the kernel-facts step names the image it builds: the head's
    assert f"drm-intel-fixes_{shas[HEAD][:6]}_" in head_image
    shot(browser, artifacts, "03-branch-build", full_page=True)
    browser.find_element(By.PARTIAL_LINK_TEXT, "Properties").click()
    wait_text(browser, shas[HEAD])  # commit_sha, in full
    shot(browser, artifacts, "04-branch-build-properties")


def test_failing_head_links_its_compiler_errors(farm, browser, artifacts):
    browser.get("about:blank")
    browser.get(web(farm[1]) + "plugins/wsgi_dashboards/kernels/page.html")
    browser.find_element(By.CSS_SELECTOR, f"tr.branch[data-branch='{NEXT}'] .error + a").click()
    wait_for(lambda: "/logs/errors" in browser.current_url, 30, "the link to the compile step's errors log")
    try:
        wait_text(browser, "oops")  # gcc quotes it with typographic quotes
        wait_text(browser, "undeclared")
    finally:
        shot(browser, artifacts, "05-compiler-errors-log")


def test_finished_bisect_build_page_names_the_culprit(farm, browser, artifacts):
    _, master, shas, _, bisect = farm
    browser.get("about:blank")  # a fresh load: the web UI would keep the previous page's tab
    browser.get(web(master) + f"#/builders/{bisect['builderid']}/builds/{bisect['number']}")
    wait_text(browser, "Build steps")
    browser.find_element(By.LINK_TEXT, "Build steps").click()
    wait_text(browser, f"first bad commit {shas[CULPRIT][:12]}")
    assert f"drm/i915: change {CULPRIT}" in browser.find_element(By.TAG_NAME, "body").text
    shot(browser, artifacts, "06-bisect-build", full_page=True)
