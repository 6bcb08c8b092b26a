"""`trace report`: a real capture of the demo workload written as one HTML file and opened in a real
browser (Debian's Chromium, headless, driven by Selenium through Debian's chromium-driver)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FIXTURES, IN_CI, REPO, CaptureRun, need_program, require_kernel, trace_cmd

from uetrace.analyze.report_html import render_page

ARTIFACTS = Path(os.environ.get("UETRACE_TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="module")
def browser():
    need_program("chromium")
    need_program("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if IN_CI:
            pytest.fail("selenium is not installed (the test extra installs it)")
        pytest.skip("needs selenium")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2000"):
        opts.add_argument(arg)
    opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    yield driver
    driver.quit()


def _open(driver, page: Path) -> None:
    driver.get_log("performance")  # what earlier pages requested is not this page's
    driver.get(page.as_uri())
    deadline = time.monotonic() + 20
    while driver.execute_script("return document.body.dataset.ready") != "1":
        assert time.monotonic() < deadline, driver.get_log("browser")
        time.sleep(0.1)


def _requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    require_kernel()
    d = tmp_path_factory.mktemp("report")
    archive = d / "demo.tar.zst"
    demo = subprocess.Popen([sys.executable, str(FIXTURES / "demo_workload.py"), "--seconds", "30"],
                            stdout=subprocess.PIPE, text=True)
    run = CaptureRun(archive, "-d", "60s", "--pid", str(demo.pid), "-t", "proc,sock,stack,net", "--iface", "lo")
    try:
        run.wait_attached()
        time.sleep(3)
    finally:
        run.signal(signal.SIGTERM)
        rc, _, err = run.wait()
        demo.kill()
        demo.wait()
    assert rc == 0, err
    out = d / "report.html"
    res = trace_cmd("report", str(archive), "-o", str(out))
    assert res.returncode == 0, res.stderr
    return out


def test_report_is_private_small_and_self_contained(report):
    assert report.stat().st_mode & 0o777 == 0o600
    text = report.read_text()
    assert len(text) < 2_000_000
    assert "<script src" not in text and "<link" not in text and "@import" not in text


def test_report_in_a_browser(browser, report):
    from selenium.webdriver.common.by import By

    _open(browser, report)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    assert _requested_urls(browser) == [report.as_uri()]  # the page fetched nothing else
    endpoints = browser.find_elements(By.CSS_SELECTOR, "table.endpoints tbody tr")
    # The demo's five paths (a request cut by the capture's start may add a row of its own).
    shown = {e.find_elements(By.TAG_NAME, "td")[0].text for e in endpoints}
    assert {"GET /", "GET /index.html", "GET /missing", "GET /slow", "GET /api/items"} <= shown, shown
    flame = browser.find_element(By.CSS_SELECTOR, "#flamegraph svg.flame")
    assert flame.get_attribute("data-zoom") == "all"
    frames = flame.find_elements(By.CSS_SELECTOR, "g")
    assert len(frames) > 3
    # A click on a frame below the root zooms to it.
    target = next(g for g in frames[2:] if float(g.find_element(By.CSS_SELECTOR, "rect").get_attribute("width")) > 5)
    name = target.find_element(By.TAG_NAME, "title").get_attribute("textContent").rsplit(" (", 1)[0]
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", target)
    assert flame.get_attribute("data-zoom") == name
    # Sorting by a column reorders the rows: most requests first, then fewest.
    header = browser.find_elements(By.CSS_SELECTOR, "table.endpoints th")[1]
    header.click()
    counts = [int(r.find_elements(By.TAG_NAME, "td")[1].text) for r in
              browser.find_elements(By.CSS_SELECTOR, "table.endpoints tbody tr")]
    assert counts == sorted(counts, reverse=True)
    # The slowest request opens into its story (trace request) naming its endpoint.
    slow = browser.find_elements(By.CSS_SELECTOR, "details.request")
    assert slow and "/slow" in slow[0].find_element(By.TAG_NAME, "summary").text
    slow[0].find_element(By.TAG_NAME, "summary").click()
    story = slow[0].find_element(By.CSS_SELECTOR, "pre.story")
    assert story.is_displayed() and "/slow" in story.text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "report.png"))


def test_archive_strings_are_text_not_markup(browser, tmp_path):
    """Strings an archive carries (paths, hostnames, warnings) cannot run script or end the data element."""
    evil = "</script><script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"
    data = {"title": evil, "warnings": [evil], "summary": {"duration_s": 1.0, "complete": True, "tracers": [
        {"tracer": evil, "attached": True, "records": 1, "lost": 0, "note": evil}]}}
    page = tmp_path / "evil.html"
    page.write_text(render_page(data, evil))
    _open(browser, page)
    assert browser.execute_script("return window.pwned") is None
    assert evil in browser.find_element("tag name", "h1").text
    assert _requested_urls(browser) == [page.as_uri()]  # the <img> was never made, so never fetched
