"""Routing that knows the conversation: follow-ups to an open agent session, the web, and
one job at a time per chat (issue 16).

The classifier's part is tested in process and through `./run.sh classify`; the router's in
a live warmwire (its state must survive a router kill -9), with a scripted OpenAI-compatible
provider on loopback (bench/fake_provider.py) that holds a job busy while the test sends more
messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

import pytest

from bench.fake_provider import Answer, FakeProvider
from conftest import REPO, Warmwire, free_port, wait_for
from services.router.classifier import Classifier
from services.router.classifier.conversation import Session, is_follow_up
from test_knowledge_system import chroma_reached

LIGHT, FULL = "container-light", "container-full"
WINDOW_S = 600.0
FOLLOW_UPS = ["yes", "yes please go ahead", "go ahead", "continue", "do it", "no, I meant the other one",
              "try again", "ต่อเลย", "เอาอันนั้น", "ได้เลย", "แก้ตามนั้น", "ลองใหม่", "ok ต่อเลยครับ"]
NEW_REQUESTS = {"thanks! what's the weather like in Tokyo?": LIGHT,
                "remember that my locker code is 4412": "oracle-only",
                "please debug this: my flask app returns 500 on every POST to /login": FULL}
WEB = ["search the web for cheap flights to Tokyo", "look it up online please", "ค้นในเน็ตให้หน่อยว่าร้านไหนดี",
       "หาในกูเกิลว่ารถไฟไปเชียงใหม่กี่โมง", "hi! can you google this for me: best ramen in Osaka"]
NOT_WEB = {"search my notes for flights": "oracle-only", "ทำไมเว็บโหลดช้าตอนคนเข้าเยอะ ควรแก้ยังไง": FULL}


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


@pytest.mark.parametrize("text", FOLLOW_UPS)
@pytest.mark.parametrize("tier", [LIGHT, FULL])
def test_a_follow_up_goes_to_the_open_sessions_tier(classifier, text, tier):
    assert classifier.classify(text, Session(tier, 30.0), WINDOW_S).tier == tier


@pytest.mark.parametrize("text", FOLLOW_UPS)
def test_without_an_open_session_a_follow_up_stays_inline(classifier, text):
    assert classifier.classify(text).tier == "inline"
    assert classifier.classify(text, Session(FULL, WINDOW_S + 1), WINDOW_S).tier == "inline"


@pytest.mark.parametrize("text, tier", NEW_REQUESTS.items())
def test_a_new_request_in_an_open_session_is_routed_on_its_own_merits(classifier, text, tier):
    assert not is_follow_up(text)
    assert classifier.classify(text, Session(LIGHT if tier == FULL else FULL, 5.0), WINDOW_S).tier == tier


@pytest.mark.parametrize("text", WEB)
def test_the_web_goes_to_an_agent_not_to_the_notes(classifier, text):
    assert classifier.classify(text).tier in (LIGHT, FULL)


@pytest.mark.parametrize("text, tier", NOT_WEB.items())
def test_the_notes_and_websites_are_not_the_web(classifier, text, tier):
    assert classifier.classify(text).tier == tier


def test_run_sh_classify_takes_the_session():
    lines = [{"text": "go ahead", "session": {"tier": FULL, "age_s": 12}},
             {"text": "go ahead"},
             {"text": "ต่อเลย", "session": {"tier": LIGHT, "age_s": 3}},
             {"text": "ต่อเลย", "session": {"tier": LIGHT, "age_s": 10 * WINDOW_S}},
             {"text": "go ahead", "session": {"tier": "inline", "age_s": 1}}]
    proc = subprocess.run([str(REPO / "run.sh"), "classify"], input="".join(json.dumps(line) + "\n" for line in lines),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [row.get("tier") for row in out] == [FULL, "inline", LIGHT, "inline", None]
    assert "error" in out[4]


# -- the live router ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def provider():
    server = FakeProvider().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def system(tmp_path_factory, provider):
    home = tmp_path_factory.mktemp("conv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
    env.update(WARMWIRE_HOME=str(home), WARMWIRE_FRONTEND=f"tcp://127.0.0.1:{free_port()}",
               WARMWIRE_POOL_BACKEND="local", WARMWIRE_AGENTS_PROVIDER="openai",
               WARMWIRE_AGENTS_PROVIDER_URL=provider.url)
    warmwire = Warmwire(home, env)
    warmwire.start()
    yield warmwire
    warmwire.stop()


@pytest.mark.slow
def test_follow_ups_reach_the_open_session_also_after_a_router_kill(system):
    client = system.client()
    first = client.ask("how many legs does a spider have?", chat="spider")
    assert first["type"] == "reply" and first["tier"] == LIGHT, first
    assert client.ask("yes please go ahead", chat="spider")["tier"] == LIGHT
    assert client.ask("yes please go ahead", chat="no-session")["tier"] == "inline"
    assert client.ask("ต่อเลย", chat="spider")["tier"] == LIGHT

    router = system.service("router")
    os.kill(router["pid"], signal.SIGKILL)
    wait_for(lambda: system.service("router")["pid"] not in (None, router["pid"]) and system.healthy(),
             30, "the router to be restarted after kill -9")
    again = system.client()
    assert again.ask("try again", chat="spider")["tier"] == LIGHT
    assert again.ask("ลองใหม่", chat="no-session")["tier"] == "inline"


@pytest.mark.slow
def test_messages_to_a_busy_chat_wait_in_order_and_become_one_turn(system, provider):
    release = threading.Event()
    provider.script(Answer(pieces=("Everest is 8,849 m.",), hold=release))
    calls = len(provider.calls)
    busy, other = system.client(), system.client()
    first = busy.send("how tall is Everest?", chat="busy")
    wait_for(lambda: len(provider.calls) > calls, 30, "the first job to reach the provider")
    later = [busy.send(text, chat="busy") for text in
             ("what about K2?", "and Kangchenjunga?", "which is hardest to climb?")]
    queued = {}
    while len(queued) < len(later):
        frame = busy.recv()
        if frame.get("kind") == "queued":
            queued[frame["id"]] = frame
    assert set(queued) == set(later) and all("this chat's current job" in f["text"] for f in queued.values())
    assert [queued[id]["position"] for id in later] == [1, 2, 3]

    # Another chat is not held up by the busy one.
    answered = other.ask("what's the capital of France?", chat="elsewhere")
    assert answered["type"] == "reply" and not release.is_set()

    release.set()
    finals = {}
    while len(finals) < 1 + len(later):
        frame = busy.recv()
        if frame["type"] == "reply":
            finals[frame["id"]] = frame
    assert set(finals) == {first, *later}
    turns = [c.body["messages"][-1]["content"] for c in provider.calls if "K2" in json.dumps(c.body)]
    assert turns == ["what about K2?\n\nand Kangchenjunga?\n\nwhich is hardest to climb?"], turns
    assert finals[later[0]]["text"] == finals[later[1]]["text"] == finals[later[2]]["text"]
    assert finals[first]["text"] == "Everest is 8,849 m."


@pytest.mark.slow
def test_the_offline_agent_answers_an_english_question_from_a_thai_note(warmwire):
    # Across languages only the vector index finds it: wait until the search-cache reaches it.
    wait_for(lambda: chroma_reached(warmwire), 60, "the search-cache to reach chroma")
    client = warmwire.client()
    learned = client.ask("remember that นัดหมอฟันวันศุกร์ สิบโมง", chat="dentist")
    assert learned["type"] == "reply" and learned["tier"] == "oracle-only", learned
    for question in ("when is my dentist appointment?", "what time do I see the dentist on friday?"):
        answer = client.ask(question, chat="dentist")
        assert answer["type"] == "reply" and "นัดหมอฟัน" in answer["text"], (question, answer)


@pytest.mark.slow
def test_a_web_request_gets_an_agent_that_says_it_cannot_browse(warmwire):
    answer = warmwire.client().ask("search the web for cheap flights to Tokyo", chat="web")
    assert answer["type"] == "reply" and answer["tier"] in (LIGHT, FULL), answer
    assert "offline agent" in answer["text"] and "cannot browse" in answer["text"], answer
