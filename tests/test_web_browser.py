"""The web page in a real headless Chromium against a real warmwire: chat (English, Thai,
an agent's progress then its reply, HTML shown as text), notes (learn, drop a file, search),
the live dashboard (every service healthy; a killed search-cache shown restarting, then
healthy), and the token. WARMWIRE_SCREENSHOTS=docs takes the README's pictures."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from conftest import Warmwire, free_port
from webpage import Page, find_chromium, screenshots_wanted

pytestmark = pytest.mark.slow

SERVICES = ("store-writer", "chroma", "search-cache", "pool-manager", "router", "web")
HTML = "<img src=x onerror=alert(1)>"
DASHBOARD_HEIGHT = 1180  # px: the whole dashboard in one picture


@pytest.fixture(scope="module")
def system():
    find_chromium()  # before starting anything: skip (or fail under CI) at once
    home = Path(tempfile.mkdtemp(prefix="ww-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
    env.update(WARMWIRE_HOME=str(home), WARMWIRE_FRONTEND=f"tcp://127.0.0.1:{free_port()}",
               WARMWIRE_WEB_LISTEN=f"127.0.0.1:{free_port()}")
    running = Warmwire(home, env)
    running.start()
    yield running
    running.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def page(system):
    opened = Page(system.web_url)
    opened.connected()
    yield opened
    opened.close()


def service_state(page: Page, name: str) -> str:
    cells = page.css(f'#services tr[data-service="{name}"] td.state')
    return cells[0].text if cells else ""


def test_hello_gets_the_inline_reply_with_its_tier_and_time(page):
    page.tab("chat")
    page.type_message("hello")
    answer = page.answer_to_last()
    assert answer.find_element("css selector", ".text").text == "Hello! What can I do for you?"
    meta = answer.find_element("css selector", ".meta").text
    assert meta.startswith("inline · ") and meta.endswith(("ms", "s")), meta


def test_shift_enter_makes_a_new_line_and_enter_sends(page):
    from selenium.webdriver.common.keys import Keys
    box = page.css("#input")[0]
    box.send_keys("thanks")
    box.send_keys(Keys.SHIFT, Keys.ENTER)
    box.send_keys("a lot")
    assert page.css("li.msg.user")[-1].text != "thanks\na lot"  # nothing sent yet
    box.send_keys(Keys.ENTER)
    page.wait(lambda: page.css("li.msg.user .text")[-1].text == "thanks\na lot", "the two-line message")
    assert page.answer_to_last().get_attribute("data-tier") == "inline"


def test_a_thai_message_is_answered_in_thai(page):
    page.type_message("สวัสดีครับ")
    answer = page.answer_to_last()
    assert page.css("li.msg.user .text")[-1].text == "สวัสดีครับ"
    assert answer.find_element("css selector", ".text").text == "สวัสดีครับ มีอะไรให้ช่วยไหมครับ"


def test_a_container_message_shows_progress_then_the_reply(page):
    page.type_message("Please debug this Python traceback: KeyError in parse_config() line 42")
    answer = page.answer_to_last()
    assert answer.get_attribute("data-tier") == "container-full"
    parts = answer.find_elements("css selector", ":scope > div")
    kinds = [part.get_attribute("class") for part in parts]
    assert "notice kind-progress" in kinds, kinds
    assert kinds.index("notice kind-progress") < kinds.index("text"), kinds  # progress came first
    assert "offline agent" in answer.find_element("css selector", ".text").text
    assert answer.find_element("css selector", ".meta").text.startswith("container-full · ")


def test_html_in_a_message_is_shown_as_text_and_runs_nothing(page):
    from selenium.common.exceptions import NoAlertPresentException
    page.type_message(HTML)
    page.answer_to_last()
    assert page.css("li.msg.user .text")[-1].text == HTML
    assert not page.css("#messages img")
    with pytest.raises(NoAlertPresentException):
        page.driver.switch_to.alert.text
    assert page.console_errors() == []  # nothing was fetched for it, nothing ran and failed
    shots = screenshots_wanted()
    if shots:
        page.screenshot(shots / "web-chat.png")


def test_history_comes_back_after_a_reload_and_chats_are_separate(page):
    before = [node.text for node in page.css("li.msg.user .text")]
    page.driver.refresh()
    page.connected()
    page.wait(lambda: [n.text for n in page.css("li.msg.user .text")] == before, "the chat's history")
    page.css("#new-chat")[0].click()
    page.wait(lambda: not page.css("li.msg"), "an empty new chat")
    page.type_message("good morning")
    page.answer_to_last()
    assert len(page.css("#chat-list li")) == 2
    page.css("#chat-list li")[1].click()  # the first chat again
    page.wait(lambda: [n.text for n in page.css("li.msg.user .text")] == before, "the first chat's history")


def test_a_note_learned_on_the_page_is_found_with_its_source(page, tmp_path):
    page.tab("notes")
    page.css("#note-text")[0].send_keys("The spare key to the blue shed is under the third flowerpot.")
    page.css("#learn")[0].click()
    page.wait(lambda: page.text_of("#learn-status").startswith("Learned"), "the note to be learned")
    # A file of many notes: progress, then done.
    notes = "\n\n".join(f"# Recipe {n}\n\nStep {n}: stir the pot for {n} minutes." for n in range(120))
    upload = tmp_path / "recipes.md"
    upload.write_text(notes + "\n\n# Lighthouse\n\nThe lighthouse keeper's cat is named Pixel.\n", encoding="utf-8")
    page.css("#file")[0].send_keys(str(upload))
    page.wait(lambda: "121/121 notes learned" in page.text_of(".uploads li") and "done" in page.text_of(".uploads li"),
              "the dropped file to be learned")
    for query, expected, source in (("where is the shed key", "third flowerpot", "web"),
                                    ("what is the lighthouse cat called", "Pixel", "web:recipes.md")):
        box = page.css("#query")[0]
        box.clear()
        box.send_keys(query)
        page.css("#search-form button")[0].click()
        page.wait(lambda: expected in page.text_of(".hits li .text"), f"a hit for {query!r}")
        top = page.css(".hits li")[0]
        assert expected in top.find_element("css selector", ".text").text
        assert top.find_element("css selector", ".source").text.startswith(f"{source} · score")


def test_the_dashboard_shows_every_service_healthy_and_live_figures(page):
    page.tab("dashboard")
    page.wait(lambda: all(service_state(page, name) == "healthy" for name in SERVICES), "every service healthy")
    assert page.text_of("#dash-health") == "all healthy"
    pool = page.text_of("#pool")
    assert "backend" in pool and ("docker" in pool or "local" in pool), pool
    page.wait(lambda: "inline" in page.text_of("#tiers") and "queue" in page.text_of("#jobs"), "tiers and jobs")
    assert "last minute" in page.text_of("#cap-p99") and "replies" in page.text_of("#cap-p99")
    assert "of 100" in page.text_of("#jobs")  # jobs.max_queued
    shots = screenshots_wanted()
    if shots:
        page.screenshot(shots / "web-dashboard.png", height=DASHBOARD_HEIGHT)


def test_a_killed_search_cache_shows_restarting_then_healthy_without_a_reload(page, system):
    page.tab("dashboard")
    page.wait(lambda: service_state(page, "search-cache") == "healthy", "the search-cache healthy")
    marker = page.driver.execute_script("window.notReloaded = true; return window.notReloaded;")
    assert marker
    os.kill(system.service("search-cache")["pid"], signal.SIGKILL)
    page.wait(lambda: service_state(page, "search-cache") in ("restarting", "starting"),
              "the dashboard to show the search-cache restarting")
    page.wait(lambda: service_state(page, "search-cache") == "healthy", "the search-cache healthy again")
    restarts = page.css('#services tr[data-service="search-cache"] td.restarts')[0].text
    assert restarts == "1"
    assert page.driver.execute_script("return window.notReloaded === true;")
    assert "search-cache: restarted (restart 1)" in page.text_of("#events")


def test_once_a_token_exists_the_page_asks_for_it(page, system):
    made = system.cli("web-token")
    assert made.returncode == 0, made.stderr
    token = made.stdout.split()[0]
    try:
        page.driver.refresh()
        page.wait(lambda: page.css("#login")[0].is_displayed(), "the page to ask for the token")
        page.css("#token")[0].send_keys("not-the-token")
        page.css("#login-form button")[0].click()
        page.wait(lambda: "not right" in page.text_of("#login-error"), "the wrong token to be refused")
        page.css("#token")[0].clear()
        page.css("#token")[0].send_keys(token)
        page.css("#login-form button")[0].click()
        page.connected()
        assert not page.css("#login")[0].is_displayed()
    finally:
        (system.home / "keys" / "web.token").unlink()
