"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven through Selenium.

The driver and browser are the system's, named by path, so Selenium Manager never runs and
nothing is downloaded. Locally a machine without them skips the browser tests; in CI (``CI``
set) they are required, and their absence fails the test.

Run as a script (``make screenshot``), it saves screenshots of a running gateway's dashboard
(laptop and phone width) once the page has drawn the gateway's figures, as the README's picture
was made: ``python -m tests.e2e.browser http://127.0.0.1:8000 docs/dashboard.png``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LAPTOP = (1366, 900)
PHONE = (390, 844)


def fixed(value: float, digits: int) -> str:
    """``value.toFixed(digits)`` as the page's JavaScript writes it: the float's exact value
    rounded with ties away from zero, where Python's format rounds ties to even (-3.125 is
    "-3.13" on the page, "-3.12" from ``f"{-3.125:.2f}"``)."""
    return str(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def missing_requirements() -> list[str]:
    """What is not installed of the browser, its driver and Selenium."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (the dev extra)")
    return missing


def require_chromium() -> None:
    """Skip (locally) or fail (in CI) when the browser or its driver is missing."""
    import pytest

    missing = missing_requirements()
    if missing:
        message = f"the dashboard's browser test needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (apt-get install chromium chromium-driver)")
        pytest.skip(message)


@contextlib.contextmanager
def chromium(profile: Path, size: tuple[int, int] = LAPTOP) -> Iterator[Any]:
    """A headless Chromium with a fresh profile, keeping its console log for the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars",
                 f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def set_viewport(driver: Any, width: int, height: int, mobile: bool = False) -> None:
    """The page's viewport exactly (a window size would include the browser's own frame)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 2 if mobile else 1,
        "mobile": mobile})


def wait_rendered(driver: Any, renders: int = 1, timeout: float = 30.0) -> None:
    """Until the page has drawn ``renders`` refreshes (its <body data-renders>)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = driver.execute_script("return Number(document.body.dataset.renders || 0)")
        if done >= renders:
            return
        time.sleep(0.1)
    raise AssertionError(f"the dashboard drew {done} refreshes in {timeout:g} s, not {renders}")


def full_page_png(driver: Any) -> bytes:
    """A screenshot of the whole page, not only the viewport."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True})
    return base64.b64decode(shot["data"])


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """Console messages of level error (uncaught exceptions included) since the last call."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


class ScreenshotError(Exception):
    """The screenshot cannot be taken (nothing installed, no gateway, a page in error)."""


def wait_drawn(driver: Any, timeout: float = 60.0) -> None:
    """Until a refresh has drawn every figure the gateway sent (``data-state="ready"``).

    A refresh that could not fetch or draw something sets ``error`` instead; that page is not
    worth a picture, so the page's own message is raised.
    """
    wait_rendered(driver, timeout=timeout)
    state = driver.execute_script("return document.body.dataset.state")
    if state != "ready":
        alert = driver.execute_script("return document.getElementById('alert').textContent")
        raise ScreenshotError(f"the dashboard could not draw the gateway's figures: {alert}")


def screenshot(url: str, out: Path) -> list[Path]:
    """Laptop and phone screenshots of ``url``'s dashboard: ``out`` and ``out``-phone."""
    phone_out = out.with_name(f"{out.stem}-phone{out.suffix}")
    with tempfile.TemporaryDirectory() as profile, chromium(Path(profile)) as driver:
        set_viewport(driver, *LAPTOP)
        driver.get(url.rstrip("/") + "/dashboard")
        wait_drawn(driver)
        out.write_bytes(full_page_png(driver))
        set_viewport(driver, *PHONE, mobile=True)
        driver.refresh()
        wait_drawn(driver)
        phone_out.write_bytes(full_page_png(driver))
        errors = console_errors(driver)
    if errors:
        raise ScreenshotError(f"console errors: {errors}")
    return [out, phone_out]


def main(argv: list[str]) -> int:
    """``python -m tests.e2e.browser GATEWAY_URL OUT.png``: errors as one line on stderr."""
    if len(argv) != 2:
        print("usage: python -m tests.e2e.browser GATEWAY_URL OUT.png", file=sys.stderr)
        return 2
    url, out = argv[0], Path(argv[1])
    missing = missing_requirements()
    if missing:
        print(f"screenshot: needs {', '.join(missing)}: `make install` installs the dev extra, "
              "`apt-get install chromium chromium-driver` the browser", file=sys.stderr)
        return 1
    from selenium.common.exceptions import WebDriverException

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5):
            pass
        saved = screenshot(url, out)
    except (OSError, ScreenshotError, WebDriverException) as exc:
        print(f"screenshot: {url}: {exc}", file=sys.stderr)
        return 1
    print("saved " + " and ".join(map(str, saved)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
