"""Does an open web page slow the message path? python -m bench.web_open [--rounds N]

One warmwire; the inline_latency row's measurement (a DEALER client, one greeting at a time)
is run in alternating rounds: with no page open, then with headless Chromium showing the live
dashboard (status pushed every second) and a second page on the chat. Alternating, in the same
run, keeps the shared machine's drift out of the comparison. Needs Debian's chromium and
chromium-driver, and selenium.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time

from proto.metrics import percentile
from proto.sockets import local_connect_endpoint
from supervisor.commands.status import fetch

from .harness import System
from .inline_latency import QUICK_SAMPLES, measure_warmwire

LIVE_DEADLINE = 30.0
POLL = 0.2
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage")


def open_pages(url: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="ww-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    driver.get(url)
    driver.execute_script("window.open(arguments[0])", url)  # a second page, on the chat
    driver.find_element("css selector", '.tab[data-view="dashboard"]').click()
    return driver, profile


def _web_stats(system: System) -> dict:
    status = fetch(system.config)
    return next((s.stats for s in status.services if s.name == "web"), {}) if status else {}


def wait_until_live(system: System) -> None:
    """Both pages connected and the dashboard receiving pushes: measuring starts only then,
    not while Chromium is still starting."""
    deadline = time.monotonic() + LIVE_DEADLINE
    while time.monotonic() < deadline:
        stats = _web_stats(system)
        if stats.get("pages", 0) >= 2 and stats.get("dashboards", 0) >= 1 and stats.get("status_polls", 0) >= 2:
            return
        time.sleep(POLL)
    raise RuntimeError(f"the pages were not live within {LIVE_DEADLINE:g} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind (default 3)")
    parser.add_argument("--samples", type=int, default=QUICK_SAMPLES, help="messages per round")
    args = parser.parse_args(argv)
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        print("bench.web_open needs chromium and chromium-driver (apt-get install chromium chromium-driver)",
              file=sys.stderr)
        return 2
    with System() as system:
        frontend = local_connect_endpoint(system.config.router.frontend)
        url = f"http://{system.config.web.listen}"
        print(f"{'round':<8}{'pages':<22}{'p50 ms':>9}{'p99 ms':>9}")
        results: dict[bool, list[float]] = {False: [], True: []}
        for number in range(args.rounds * 2):
            with_pages = number % 2 == 1
            driver = profile = None
            if with_pages:
                driver, profile = open_pages(url)
                wait_until_live(system)
            try:
                samples = measure_warmwire(frontend, args.samples, lambda done, total: None)
            finally:
                if driver is not None:
                    web = _web_stats(system)
                    driver.quit()
                    shutil.rmtree(profile, ignore_errors=True)
            results[with_pages].extend(samples)
            label = f"dashboard + chat ({web['dashboards']} live)" if with_pages else "none"
            print(f"{number + 1:<8}{label:<22}{percentile(samples, 0.5):>9.3f}{percentile(samples, 0.99):>9.3f}")
        for with_pages, samples in results.items():
            print(f"all rounds, {'with pages' if with_pages else 'no page':<11} p50 {percentile(samples, 0.5):.3f} ms, "
                  f"p99 {percentile(samples, 0.99):.3f} ms ({len(samples)} messages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
