"""Screenshots of every dashboard tab, taken with headless Chromium (Debian's chromium and chromedriver).

Usage: ``python -m monitoring.screenshots --out docs/screenshots`` with the dashboard running
(`healthflow dashboard`). The script mints a short-lived ``audit:read`` token from the settings, opens the
dashboard once with ``?token=`` (the dashboard moves it into a cookie), then writes
``<tab>-<language>.png`` for each tab in English and French. The same helpers drive the dashboard tests.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Headless, sandbox off (containers run as root), and no background traffic to any outside host.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)
TABS = ("overview", "fairness", "drift", "lineage")
LANGUAGES = ("en", "fr")


@contextmanager
def chromium(*, timeout_seconds: float = 30.0) -> Iterator[Any]:
    """Yield a headless Chromium WebDriver with a fresh profile folder; quit it and remove the folder after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="healthflow-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        driver.set_page_load_timeout(timeout_seconds)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver: Any, css: str, *, timeout_seconds: float = 30.0, text: str | None = None) -> Any:
    """Wait until an element matching ``css`` is displayed (and contains ``text`` when given); return it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout_seconds)
    if text is not None:
        wait.until(expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return wait.until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css)))


def open_dashboard(driver: Any, base_url: str, token: str) -> None:
    """Load the dashboard with ``?token=``; the dashboard sets its cookie and drops the token from the URL."""
    driver.get(f"{base_url.rstrip('/')}/?token={token}")
    wait_for(driver, "#tab-content")


def choose_language(driver: Any, language: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#language input[value='{language}']").click()


def open_tab(driver: Any, tab: str) -> Any:
    """Click ``tab`` and return its content element once rendered."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, f"tab-{tab}").click()
    return wait_for(driver, f"#{tab}-content")


def capture_tabs(driver: Any, folder: Path, *, languages: tuple[str, ...] = LANGUAGES) -> list[Path]:
    """Write one PNG per tab and language into ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for language in languages:
        choose_language(driver, language)
        for tab in TABS:
            open_tab(driver, tab)
            # Plotly draws after the content element appears; wait a moment so the image contains the charts.
            time.sleep(1.0)
            path = folder / f"{tab}-{language}.png"
            driver.save_screenshot(str(path))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    from healthflow.logs import configure_logging
    from healthflow.settings import get_settings
    from serving.auth import AUDIT_READ
    from serving.tokens import create_token

    parser = argparse.ArgumentParser(description="Write a screenshot of every dashboard tab, in English and French.")
    parser.add_argument("--url", default=None, help="Dashboard address (default: from HEALTHFLOW_DASHBOARD_HOST/PORT).")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="Folder for the PNG files.")
    arguments = parser.parse_args(argv)

    settings = get_settings()
    configure_logging(level=settings.log_level, log_format="text")
    url = arguments.url or f"http://{settings.dashboard_host}:{settings.dashboard_port}"
    token = create_token(settings, subject="screenshots", scopes=[AUDIT_READ], ttl_seconds=600)
    with chromium() as driver:
        open_dashboard(driver, url, token)
        paths = capture_tabs(driver, arguments.out)
    for path in paths:
        print(path)  # noqa: T201 - the script's output is the list of files written
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
