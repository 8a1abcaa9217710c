"""The dashboard (/ui) in a real browser against the whole stack on the embedded control
plane: Debian's Chromium, headless, driven by selenium through chromedriver. It signs in,
watches a running job's progress change, opens that job's preview contact sheet, and
cancels another job.

The local Hub holds each source download until the test opens a gate, so the jobs are
seen Running before they make progress. With AUGMENT_DASHBOARD_SCREENSHOTS set to a
folder (`docs` for the README's pictures), the test saves dashboard-jobs.png and
dashboard-job.png there; without it no file outside the test's own is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from augment_dev.browser import Browser, ensure_browser
from augment_dev.cluster import EmbeddedCluster
from augment_dev.datasets import make_lerobot_v3
from augment_dev.stack import Stack, StackOptions
from augment_runner.preview import sheet_size

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS_ENV = "AUGMENT_DASHBOARD_SCREENSHOTS"
PROJECT = "5d3c1b2a-7e6f-4a8b-9c0d-1e2f3a4b5c6d"
SHOWN, HELD = "robotics-lab/pick-place", "robotics-lab/long-horizon"
FRAME_HW = (120, 160)
COPIES = 3
T = TypeVar("T")


@pytest.fixture(scope="module")
def browser() -> Browser:
    return ensure_browser()  # installs Debian's chromium and chromium-driver if missing


@pytest.fixture(scope="module")
def stack(cluster: EmbeddedCluster) -> Iterator[Stack]:
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "augmentationjobs.augment.dev.yaml"))
    options = StackOptions(namespace="dashboard", release="dashboard", project_ids=(PROJECT,))
    with Stack(cluster, options) as running:
        sources = Path(tempfile.mkdtemp(prefix="dashboard-src-"))
        for repo in (SHOWN, HELD):
            path = make_lerobot_v3(sources / repo.split("/")[1], episodes=4, frames=24,
                                   codec="libx264", size=FRAME_HW)
            running.hub.seed(repo, path)
        yield running


@pytest.fixture
def driver(browser: Browser) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(browser.chromium)
    # --no-sandbox: Chromium's sandbox refuses to run as root, which the test bed is.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both paths given: selenium's driver manager, which would download, never runs.
    chrome = webdriver.Chrome(options=options, service=Service(str(browser.driver)))
    try:
        yield chrome
    finally:
        chrome.quit()


# ---------- helpers ----------
def until(driver: WebDriver, check: Callable[[], T | None], what: str,
          timeout: float = 60) -> T:
    # The page redraws its tables at each refresh: an element found just before may be
    # gone a moment later (stale), and is looked up again at the next try.
    wait = WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,))
    result: T = wait.until(lambda _: check(), message=f"waited {timeout:.0f}s for {what}")
    return result


def by_id(driver: WebDriver, element_id: str) -> WebElement:
    return driver.find_element(By.ID, element_id)


def row_cells(driver: WebDriver, job_id: str) -> dict[str, str] | None:
    """The job's row in the list, read in one go (a refresh may replace it any time)."""
    cells = driver.execute_script(
        "const row = document.querySelector(`#jobs-table tr[data-job-id='${arguments[0]}']`);"
        "return row && [...row.cells].map((cell) => cell.innerText.trim());", job_id)
    if not cells:
        return None
    return dict(zip(("job", "phase", "progress", "dataset", "age"), cells, strict=True))


def row_when(driver: WebDriver, job_id: str,
             check: Callable[[dict[str, str]], bool]) -> dict[str, str] | None:
    cells = row_cells(driver, job_id)
    return cells if cells is not None and check(cells) else None


def loaded_size(driver: WebDriver, image: WebElement) -> tuple[int, int] | None:
    """The natural size of a shown image once it has loaded."""
    size = driver.execute_script(
        "const img = arguments[0];"
        "return img.complete && img.naturalWidth ? [img.naturalWidth, img.naturalHeight] : null;",
        image)
    return (size[0], size[1]) if size and image.is_displayed() else None


def open_job(driver: WebDriver, job_id: str) -> None:
    """Follow the job's link in the list, as a user clicks it."""
    def click() -> bool:
        driver.find_element(By.CSS_SELECTOR, f"tr[data-job-id='{job_id}'] a").click()
        return True

    until(driver, click, f"a click on job {job_id}")
    until(driver, lambda: by_id(driver, "job").is_displayed() or None, "the job's page")


def create_job(stack: Stack, dataset: str, name: str) -> str:
    body = {"project_id": PROJECT, "dataset_id": dataset, "name": name,
            "augment_transforms": "lighting,noise,occlusion", "augment_copies": COPIES}
    r = httpx.post(f"{stack.api_url}/v1/augmentation", json=body,
                   headers={"X-Api-Key": stack.api_key}, timeout=30)
    assert r.status_code == 201, r.text
    job_id: str = r.json()["job_id"]
    return job_id


def api_job(stack: Stack, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{stack.api_url}/v1/augmentation/{job_id}",
                  headers={"X-Api-Key": stack.api_key}, timeout=30)
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    return job


def screenshot(driver: WebDriver, name: str, height: int | None = None) -> None:
    """Save the window as `name` under $AUGMENT_DASHBOARD_SCREENSHOTS, when it is set."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder:
        return
    target = Path(folder) if Path(folder).is_absolute() else REPO / folder
    target.mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    if height is not None:
        driver.set_window_size(size["width"], height)
    try:
        assert driver.save_screenshot(str(target / name))
    finally:
        driver.set_window_size(size["width"], size["height"])


def sign_in(driver: WebDriver, stack: Stack) -> None:
    driver.get(f"{stack.api_url}/ui")
    key = until(driver, lambda: by_id(driver, "api-key") if by_id(driver, "api-key")
                .is_displayed() else None, "the sign-in form")
    key.send_keys("not-a-key")
    by_id(driver, "login-submit").click()
    until(driver, lambda: by_id(driver, "login-error").text or None, "the refusal")
    assert "invalid API key" in by_id(driver, "login-error").text
    key.clear()
    key.send_keys(stack.api_key)
    by_id(driver, "login-submit").click()
    until(driver, lambda: by_id(driver, "jobs").is_displayed() or None, "the jobs list")
    stored = driver.execute_script("return sessionStorage.getItem('augment-api-key')")
    assert stored == stack.api_key


# ---------- the test ----------
def test_sign_in_watch_progress_open_the_preview_and_cancel_another_job(
        stack: Stack, driver: WebDriver, tmp_path: Path) -> None:
    started = tmp_path / "start-pick-place"  # the shown job's download waits for this file
    stack.hub.hold(rf"^GET /api/datasets/{SHOWN}(/|$)", started)
    stack.hub.hold(rf"^GET /api/datasets/{HELD}(/|$)", tmp_path / "never")
    held = create_job(stack, HELD, "long horizon, to cancel")
    shown = create_job(stack, SHOWN, "pick-place lighting+noise+occlusion")

    sign_in(driver, stack)
    until(driver, lambda: row_cells(driver, held) and row_cells(driver, shown),
          "both jobs listed")
    cells = row_cells(driver, shown)
    assert cells is not None and cells["dataset"] == SHOWN and cells["age"].endswith("s")

    # A running job's progress changes on the page, without a reload.
    before = until(driver, lambda: row_when(driver, shown, lambda c: c["phase"] == "Running"),
                   "the job to run", timeout=180)
    assert before["progress"] == "starting"
    driver.execute_script("window.sameDocument = true")
    started.touch()
    seen = [before["progress"]]

    def progress_seen() -> bool | None:
        cells = row_cells(driver, shown)
        if cells is not None and cells["progress"] != seen[-1]:
            seen.append(cells["progress"])
        return seen[-1] == "4 / 4 episodes (100%)" or None

    until(driver, progress_seen, "its progress to reach 4 of 4 episodes", timeout=240)
    done = [int(text.split(" / ")[0]) for text in seen[1:]]
    assert done == sorted(done) and len(seen) >= 2, seen  # it only moves forward
    screenshot(driver, "dashboard-jobs.png", height=560)
    assert driver.execute_script("return window.sameDocument") is True

    # Its page: parameters, message, events, and once it succeeded, the preview.
    open_job(driver, shown)
    until(driver, lambda: by_id(driver, "job-phase").text == "Succeeded" or None,
          "the job page to show Succeeded", timeout=240)
    size = until(driver, lambda: loaded_size(driver, by_id(driver, "preview-img")),
                 "the preview to load")
    assert size == sheet_size(*FRAME_HW, copies=COPIES)  # the runner's contact sheet
    assert "Top row" in by_id(driver, "preview-caption").text
    assert by_id(driver, "job-progress-text").text == "4 / 4 episodes (100%)"
    assert by_id(driver, "job-message").text  # the operator's message
    params = by_id(driver, "job-params").text
    assert f"dataset_id {SHOWN}" in params and f"augment_copies {COPIES}" in params
    until(driver, lambda: "Succeeded" in by_id(driver, "job-events").text or None,
          "the operator's Succeeded event")
    assert not by_id(driver, "cancel").is_displayed()  # nothing to cancel any more
    screenshot(driver, "dashboard-job.png", height=1500)

    # Cancel the other job, after confirming.
    driver.find_element(By.LINK_TEXT, "← All jobs").click()
    until(driver, lambda: row_cells(driver, held), "the list again")
    open_job(driver, held)
    until(driver, lambda: by_id(driver, "job-phase").text == "Running" or None,
          "the held job running", timeout=180)
    by_id(driver, "cancel").click()
    dialog = by_id(driver, "confirm-cancel")
    assert dialog.is_displayed() and "cannot be undone" in dialog.text
    by_id(driver, "confirm-no").click()  # changing one's mind cancels nothing
    assert not dialog.is_displayed() and not api_job(stack, held)["cancel_requested"]
    by_id(driver, "cancel").click()
    by_id(driver, "confirm-yes").click()
    until(driver, lambda: by_id(driver, "job-phase").text == "Cancelled" or None,
          "the operator to cancel the job", timeout=120)
    assert api_job(stack, held)["status"] == "Cancelled"

    driver.find_element(By.LINK_TEXT, "← All jobs").click()
    until(driver, lambda: row_when(driver, held, lambda c: c["phase"] == "Cancelled"),
          "the list to show the cancel")
    errors = [e for e in driver.get_log("browser")  # type: ignore[attr-defined]
              if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
    assert errors == []  # no script error, no Content-Security-Policy violation
