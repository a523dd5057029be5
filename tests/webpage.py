"""Driving the web page in a real headless Chromium (Debian's chromium and chromium-driver,
through selenium): the shared parts of the browser tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from conftest import unavailable

# As root, in a container, offline: no sandbox, no GPU, nothing fetched in the background.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,860", "--lang=en-US")
BROWSER_DEADLINE = 30.0


def find_chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        unavailable("Chromium", "chromium or chromedriver is not on PATH")
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable("Chromium", "the selenium package is not installed (./run.sh installs it)")
    return browser, driver


class Page:
    """One browser window on the page, with waits that fail by saying what hung."""

    def __init__(self, url: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        browser, driver = find_chromium()
        self.profile = Path(tempfile.mkdtemp(prefix="ww-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for arg in CHROMIUM_ARGS:
            options.add_argument(arg)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        self.url = url
        self.driver.get(url)

    def css(self, selector: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def wait(self, condition: Callable[[], Any], what: str, deadline: float = BROWSER_DEADLINE) -> Any:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        def check(_driver) -> Any:
            try:
                return condition()
            except StaleElementReferenceException:
                return False  # the page re-rendered under us: look again
        try:
            return WebDriverWait(self.driver, deadline, poll_frequency=0.1).until(check)
        except Exception as exc:
            if type(exc).__name__ != "TimeoutException":
                raise
            raise AssertionError(f"timed out after {deadline:g} s waiting for {what}") from None

    def text_of(self, selector: str) -> str:
        return " ".join(node.text for node in self.css(selector))

    def tab(self, view: str) -> None:
        self.css(f'.tab[data-view="{view}"]')[0].click()
        self.wait(lambda: self.css(f"#view-{view}")[0].is_displayed(), f"the {view} view to show")

    def connected(self) -> None:
        self.wait(lambda: self.text_of("#connection") == "connected", "the page to connect")

    def type_message(self, text: str) -> None:
        from selenium.webdriver.common.keys import Keys
        box = self.css("#input")[0]
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def answer_to_last(self) -> Any:
        """The last message's answer bubble once it is answered."""
        def answered():
            bubbles = self.css("li.msg.bot")
            return bubbles and "answered" in bubbles[-1].get_attribute("class") and bubbles[-1]
        return self.wait(answered, "the last message's answer")

    def console_errors(self) -> list[str]:
        return [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    def screenshot(self, path: Path, height: int | None = None) -> None:
        """The window as a PNG; ``height``: taller for this picture only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.execute_script("const m = document.getElementById('messages'); m.scrollTop = m.scrollHeight;")
        size = self.driver.get_window_size()
        if height:
            self.driver.set_window_size(size["width"], height)
        try:
            self.driver.save_screenshot(str(path))
        finally:
            self.driver.set_window_size(size["width"], size["height"])

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def screenshots_wanted() -> Path | None:
    """WARMWIRE_SCREENSHOTS=folder: the browser tests save the README's pictures there."""
    folder = os.environ.get("WARMWIRE_SCREENSHOTS")
    return Path(folder) if folder else None
