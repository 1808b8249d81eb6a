"""The report's HTML page in a real headless browser (Debian's chromium through selenium).

The page is drawn from the committed 57-spot study summary; the browser must load it from disk with
every image decoded (they are embedded: the file stands alone) and no console error. A screenshot is
left beside it for a person to look at. Without chromium the test skips and says how to install it,
except in CI (CI=true), where it must run (`make system-deps` installs it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from toolkit.report import write_report

SUMMARY = REPO / "results" / "study-2022" / "starmap-57" / "summary.nc"


def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        reason = "chromium and chromedriver not found: `sudo apt-get install chromium chromium-driver`"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"the HTML report test must run in CI but {reason}", pytrace=False)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1200"):
        options.add_argument(argument)  # --no-sandbox: chromium refuses to run as root otherwise
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def test_the_html_report_loads_with_every_image_and_no_console_error(tmp_path: Path) -> None:
    shutil.copy(SUMMARY, tmp_path / "summary.nc")
    write_report(tmp_path)
    page = tmp_path / "report" / "index.html"
    (tmp_path / "report" / "moved").mkdir()
    for png in (tmp_path / "report").glob("*.png"):  # the page must not need its PNG files
        png.rename(tmp_path / "report" / "moved" / png.name)

    from selenium.webdriver.common.by import By

    browser = _browser()
    try:
        browser.get(page.as_uri())
        assert "starmap-57" in browser.title
        images = browser.find_elements(By.TAG_NAME, "img")
        assert len(images) == 3  # proportion maps, metrics and runtimes against batch size
        for image in images:
            decoded = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
            assert decoded and decoded > 100, image.get_attribute("alt")
        headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
        assert "What the numbers mean" in headings and "Provenance" in headings
        assert len(browser.find_elements(By.TAG_NAME, "table")) >= 3
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
        browser.save_screenshot(str(tmp_path / "report" / "screenshot.png"))
    finally:
        browser.quit()


def test_a_sweeps_report_shows_its_accuracy_during_training(tmp_path: Path, tiny_sweep_data: dict) -> None:
    """A small version of the demo sweep (synthetic tissue, local processes, destVI both at batch 8 and 64):
    its page shows the accuracy-during-training figure, decoded, with its caption and convergence table."""
    from selenium.webdriver.common.by import By

    from toolkit.config import parse_sweep
    from toolkit.launch import run_sweep

    tiny_sweep_data["output"] = str(tmp_path)
    tiny_sweep_data["methods"][0] |= {"amortization": "both", "batch_size": [8, 64]}
    assert run_sweep(parse_sweep(tiny_sweep_data, "demo"), report=True).states["done"] == 2
    browser = _browser()
    try:
        browser.get((tmp_path / "report" / "index.html").as_uri())
        (image,) = [
            i for i in browser.find_elements(By.TAG_NAME, "img") if i.get_attribute("alt") == "accuracy during training"
        ]
        decoded = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
        assert decoded and decoded > 100
        headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h3")]
        assert "Accuracy during training" in headings
        assert "converged at step" in browser.page_source
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        browser.quit()
