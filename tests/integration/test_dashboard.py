"""The /ui/ dashboard in headless Chromium (Debian's `chromium`): the rendered DOM (`--dump-dom`), the
pages used with JavaScript off and live refresh with it on (driven through chromedriver, Debian's
`chromium-driver`, with selenium), and screenshots kept in tests/artifacts/ (gitignored; CI uploads
the folder) for a person to look at.

The site is the in-process daemon of test_results.py with results driven through its real HTTP
server: node-1 installs, node-2 fails, then a comment-only commit, a kernel-argument change, its
revert and a rejected commit (`revert_sequence`); an unknown machine asks for a script.
"""

from __future__ import annotations

import contextlib
import html
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options as ChromeOptions
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration.test_results import IPS, MACS, STRANGER, Site, post_json, revert_sequence, simulate_netboot
from tests.support import require_root, require_tool

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def chromium(tmp: Path, *args: str) -> str:
    exe = require_tool("chromium", "chromium")
    require_root()  # --no-sandbox is what makes it run as root in a container
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}", *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(tmp: Path, name: str, url: str, size: str = "1280,900") -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    chromium(tmp, f"--screenshot={shot}", f"--window-size={size}", "--hide-scrollbars", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    return shot


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Site, dict[str, str]]]:
    s = Site(tmp_path)
    try:
        initial = s.sha
        s.sha = s.apply({"profiles/local.yaml": "name: Local disk\nboot: {}\n",
                         "groups/default.yaml": "profile: local\n"}, "a default group for unknown machines")
        simulate_netboot(s.port, "node-2", s.sha)
        failure = {"status": "failure", "message": "curtin: no disk"}
        assert post_json(s.port, f"/report/{MACS['node-2']}", failure, IPS["node-2"]).status == 200
        shas = revert_sequence(s)  # node-1 installs first, then the commits
        shas["initial"] = initial
        assert s.get("/ipxe?mac=52-54-00-00-00-77", STRANGER).status in (200, 403, 404)
        s.flush()
        yield s, shas
    finally:
        s.close()


def rows(dom: str, tag: str, attr: str) -> dict[str, dict[str, str]]:
    """{attr value: data-* attributes} of every `<tag ... attr=...>` in the DOM."""
    found = {}
    for element in re.findall(rf"<{tag} [^>]*{attr}=\"[^\"]*\"[^>]*>", dom):
        attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', element))
        found[attrs[attr]] = attrs
    return found


def test_commits_fleet_node_and_commit_pages_in_headless_chromium(site: tuple[Site, dict[str, str]],
                                                                   tmp_path: Path) -> None:
    s, shas = site
    base = f"http://127.0.0.1:{s.port}"
    dom = chromium(tmp_path, "--dump-dom", f"{base}/ui/")
    # the header: the daemon's condition (stalled on the rejected commit) and each server's state
    assert re.search(r'<header class="status" id="daemon" data-condition="Stalled"', dom), dom[:2000]
    assert rows(dom, "span", "data-server")["http"]["data-state"] == "running"
    # every commit, newest first, in the words /status and `results` use; the rejected one with findings
    commits = rows(dom, "tr", "data-revision")
    order = re.findall(r'<tr class="commit" id="c-([0-9a-f]{40})"', dom)
    assert order == [shas[k] for k in ("bad", "revert", "change", "comment", "first", "initial")]
    assert [commits[shas[k]]["data-state"] for k in ("bad", "revert", "change", "comment", "first")] == [
        "rejected", "applied", "superseded", "superseded", "superseded"]
    bad = dom.split(f'id="c-{shas["bad"]}"', 1)[1].split("</tr>", 1)[0]
    assert "node-2 typo" in bad and "nodes/node-2.yaml" in bad and 'class="findings"' in bad
    assert "serial console" in dom and "Test" in dom  # subject and author
    # rollout bars: the comment and the revert keep node-1's success (and node-2's failure)
    bars = {m[0]: m[1] for m in re.findall(r'id="c-([0-9a-f]{40})"[^\n]*?<div class="rollout" ([^>]*)>',
                                            dom.replace("<tr ", "\n<tr "))}
    for key, (ok, failed, pending) in {"first": (1, 1, 2), "comment": (1, 1, 2), "change": (0, 0, 4),
                                       "revert": (1, 1, 2)}.items():
        attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', bars[shas[key]]))
        assert (attrs["data-succeeded"], attrs["data-failed"], attrs["data-pending"]) == (
            str(ok), str(failed), str(pending)), (key, attrs)
    # the unknown machine, with the group it would match
    unknown = rows(dom, "tr", "data-mac")
    assert "52:54:00:00:00:77" in unknown, dom[-3000:]
    unknown_row = dom.split('data-mac="52:54:00:00:00:77"', 1)[1].split("</tr>", 1)[0]
    assert "default" in unknown_row
    screenshot(tmp_path, "dashboard-commits.png", f"{base}/ui/")

    fleet = chromium(tmp_path, "--dump-dom", f"{base}/ui/fleet")
    nodes = rows(fleet, "tr", "data-node")
    assert {n: (a["data-outcome"], a["data-drift"]) for n, a in nodes.items()} == {
        "node-1": ("succeeded", "false"), "node-2": ("failed", "false"), "node-3": ("pending", "true"),
        "node-4": ("pending", "true")}
    screenshot(tmp_path, "dashboard-fleet.png", f"{base}/ui/fleet")

    node = chromium(tmp_path, "--dump-dom", f"{base}/ui/nodes/node-1")
    assert 'id="drift" data-drift="false"' in node
    phases = re.findall(r'<g data-phase="([^"]+)" data-seconds="([0-9.]+)"', node)
    assert [p for p, _ in phases] == ["script", "kernel", "initrd", "seed", "report"], phases
    assert "downloaded the kernel /assets/vmlinuz (600 bytes)" in node and "reported success" in node
    assert "{&quot;" not in node  # no raw JSON
    sections = re.findall(r'<section id="r-([0-9a-f]{40})" data-revision="[^"]+" data-outcome="([a-z-]+)"', node)
    assert sections == [(shas["revert"], "succeeded"), (shas["change"], "pending"), (shas["comment"], "succeeded")]
    screenshot(tmp_path, "dashboard-node.png", f"{base}/ui/nodes/node-1")

    commit = chromium(tmp_path, "--dump-dom", f"{base}/ui/commits/{shas['first']}")
    assert re.search(r'<svg id="histogram"[^>]* data-boots="2"', commit), commit[:3000]
    assert html.unescape("report failure: curtin: no disk") in html.unescape(commit)
    screenshot(tmp_path, "dashboard-commit.png", f"{base}/ui/commits/{shas['first']}")
    rejected = chromium(tmp_path, "--dump-dom", f"{base}/ui/commits/{shas['bad']}")
    assert 'data-state="rejected"' in rejected and "Findings (never served)" in rejected


@contextlib.contextmanager
def browser(tmp: Path, *, javascript: bool) -> Iterator[webdriver.Chrome]:
    """Headless Chromium driven through chromedriver (Debian's chromium-driver, offline: no
    download), with the page's JavaScript on or off (Chromium's content setting, as a user turns
    it off)."""
    exe = require_tool("chromium", "chromium")
    driver = require_tool("chromedriver", "chromium-driver")
    require_root()  # --no-sandbox is what makes it run as root in a container
    options = ChromeOptions()
    options.binary_location = exe
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp / ('profile-js' if javascript else 'profile-nojs')}", "--window-size=1280,900"):
        options.add_argument(arg)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    chrome = webdriver.Chrome(options=options, service=ChromeService(executable_path=driver,
                                                                     log_output=str(tmp / "chromedriver.log")))
    try:
        yield chrome
    finally:
        chrome.quit()


def attr(element: WebElement, name: str) -> str:
    value = element.get_attribute(name)
    assert value is not None, (name, element.get_attribute("outerHTML"))
    return value


def shot(chrome: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    assert chrome.save_screenshot(str(ARTIFACTS / name))


def test_with_javascript_off_every_page_is_complete_and_reached_by_its_links(
        site: tuple[Site, dict[str, str]], tmp_path: Path) -> None:
    """Issue 24: the dashboard with JavaScript off in a real browser, used by clicking its links
    only: the commit list (states, rollouts, the rejected commit's findings, unknown machines), the
    fleet, a node (waterfall, events in words) and a commit (histogram)."""
    s, shas = site
    with browser(tmp_path, javascript=False) as chrome:
        chrome.get(f"http://127.0.0.1:{s.port}/ui/")
        # scripting is off: <noscript>'s refresh is parsed as an element (with scripting on it is text)
        assert len(chrome.find_elements(By.CSS_SELECTOR, "noscript meta[http-equiv=refresh]")) == 1
        assert attr(chrome.find_element(By.ID, "daemon"), "data-condition") == "Stalled"
        states = {attr(r, "data-revision"): attr(r, "data-state") for r in chrome.find_elements(By.CSS_SELECTOR,
                                                                                               "tr.commit")}
        assert [states[shas[k]] for k in ("bad", "revert", "change", "comment", "first")] == [
            "rejected", "applied", "superseded", "superseded", "superseded"]
        findings = chrome.find_element(By.CSS_SELECTOR, f"#c-{shas['bad']} .findings")
        assert findings.is_displayed() and "nodes/node-2.yaml" in findings.text
        revert = chrome.find_element(By.CSS_SELECTOR, f"#c-{shas['revert']} .rollout")
        assert (attr(revert, "data-succeeded"), attr(revert, "data-failed")) == ("1", "1")
        assert "1 succeeded" in revert.text  # in words too, not colour only
        assert chrome.find_element(By.CSS_SELECTOR, "#unknown tr[data-mac='52:54:00:00:00:77']").is_displayed()
        shot(chrome, "nojs-commits.png")

        chrome.find_element(By.LINK_TEXT, "fleet").click()
        assert chrome.current_url.endswith("/ui/fleet")
        fleet = {attr(r, "data-node"): attr(r, "data-outcome") for r in chrome.find_elements(
            By.CSS_SELECTOR, "#fleet tr[data-node]")}
        assert fleet == {"node-1": "succeeded", "node-2": "failed", "node-3": "pending", "node-4": "pending"}
        shot(chrome, "nojs-fleet.png")

        chrome.find_element(By.LINK_TEXT, "node-1").click()
        assert chrome.current_url.endswith("/ui/nodes/node-1")
        phases = [attr(g, "data-phase") for g in chrome.find_elements(By.CSS_SELECTOR, "svg g[data-phase]")]
        assert phases == ["script", "kernel", "initrd", "seed", "report"], phases
        body = chrome.find_element(By.TAG_NAME, "main").text
        assert "downloaded the kernel /assets/vmlinuz (600 bytes)" in body and "reported success" in body
        assert '{"' not in body  # events in words, not JSON
        shot(chrome, "nojs-node.png")

        chrome.find_element(By.LINK_TEXT, "commits").click()
        chrome.find_element(By.CSS_SELECTOR, f"#c-{shas['first']} a[href^='/ui/commits/']").click()
        assert chrome.current_url.endswith(f"/ui/commits/{shas['first']}")
        assert attr(chrome.find_element(By.ID, "histogram"), "data-boots") == "2"
        shot(chrome, "nojs-commit.png")


def test_an_open_page_shows_a_boot_posted_to_the_daemon_without_a_reload(tmp_path: Path) -> None:
    """Issue 24: live refresh in a real browser with JavaScript on. The fleet page is open; node-1
    netboots through the daemon's HTTP server and reports; the open page shows it installing, then
    succeeded, and it is the same document all along (no reload: a mark set on it stays)."""
    s = Site(tmp_path)
    try:
        s.flush()
        with browser(tmp_path, javascript=True) as chrome:
            chrome.get(f"http://127.0.0.1:{s.port}/ui/fleet")
            assert not chrome.find_elements(By.CSS_SELECTOR, "noscript meta")  # scripting is on
            row = "#fleet tr[data-node='node-1']"
            assert attr(chrome.find_element(By.CSS_SELECTOR, row), "data-outcome") == "pending"
            chrome.execute_script("window.openedOnce = 'yes';")

            def outcome_is(expected: str) -> None:
                # The live refresh replaces the table: a row found just before it is stale (retried).
                WebDriverWait(chrome, 60, poll_frequency=0.2,
                              ignored_exceptions=[NoSuchElementException, StaleElementReferenceException]).until(
                    lambda c: c.find_element(By.CSS_SELECTOR, row).get_attribute("data-outcome") == expected,
                    f"node-1 {expected} on the open page")

            simulate_netboot(s.port, "node-1", s.sha)
            outcome_is("installing")
            assert post_json(s.port, f"/report/{MACS['node-1']}", {"status": "success"}, IPS["node-1"]).status == 200
            outcome_is("succeeded")
            assert chrome.execute_script("return window.openedOnce;") == "yes"  # the same document: no reload
            assert chrome.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed")
            assert "report success" in chrome.find_element(By.CSS_SELECTOR, row).text
            shot(chrome, "live-fleet.png")
    finally:
        s.close()
