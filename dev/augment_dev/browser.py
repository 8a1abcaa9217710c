"""A headless Chromium and its WebDriver, for the dashboard's browser test.

Both come from Debian (chromium, chromium-driver), installed where missing as the image
tools are (augment_dev.debian); when they are on PATH this costs two lookups and no apt
call. The test drives them with selenium, given both paths, so selenium's own driver
manager (which would download a browser) never runs: nothing outside the machine is
reached. `python -m augment_dev.browser` (`make browser`) installs them and prints where.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from augment_dev.debian import install_missing

TOOLS = {"chromium": "chromium", "chromedriver": "chromium-driver"}


@dataclass(frozen=True)
class Browser:
    chromium: Path
    driver: Path


def ensure_browser() -> Browser:
    install_missing(TOOLS, "the dashboard's browser test")
    chromium, driver = (shutil.which(command) for command in TOOLS)
    assert chromium is not None and driver is not None  # install_missing put them there
    return Browser(Path(chromium), Path(driver))


def main() -> None:
    browser = ensure_browser()
    print(f"chromium: {browser.chromium}\nchromedriver: {browser.driver}")


if __name__ == "__main__":
    main()
