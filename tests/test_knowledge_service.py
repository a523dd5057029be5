"""The search-cache with a real `chroma run`, a real store-writer and SQLite, over real sockets."""

from __future__ import annotations

import uuid

import pytest

from conftest import wait_for
from proto.frames import LearnRequest, RecallRequest, SearchFilters, SearchRequest
from test_knowledge_rig import CHROMA_DEADLINE, ChromaServer, KnowledgeRig, raw, rig_config, wait_until_up

THAI_NOTE = "แมวของฉันชื่อมิโซะ ชอบกินปลาทูน่ามาก"
ENGLISH_NOTE = "The spare house key is hidden under the blue flower pot by the back door."
OTHER_NOTES = [
    "Dentist appointment moved to Thursday morning.",
    "รหัสไวไฟที่คอนโดคือ sunny2024",
    "My passport expires in November 2027.",
    "ร้านซ่อมมือถือชื่อช่างเอก อยู่หน้าตลาด",
]


@pytest.fixture(scope="module")
def chroma(tmp_path_factory):
    server = ChromaServer(tmp_path_factory.mktemp("chroma")).start()
    yield server
    server.stop()


@pytest.fixture
def rig(home, chroma):
    rig = KnowledgeRig(rig_config(home, chroma.port))
    wait_until_up(rig.index, rig.service)
    yield rig
    rig.close()


@pytest.fixture
def learned(rig):
    for text in (THAI_NOTE, ENGLISH_NOTE, *OTHER_NOTES):
        assert rig.client.learn(text).indexed
    return rig


@pytest.mark.parametrize("query, expected", [
    ("what is the name of my cat", THAI_NOTE),           # English query, Thai note
    ("แมวชื่ออะไร", THAI_NOTE),                            # Thai paraphrase
    ("where did I hide the key to the house", ENGLISH_NOTE),
    ("กุญแจบ้านสำรองซ่อนไว้ที่ไหน", ENGLISH_NOTE),           # Thai query, English note
])
@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_paraphrased_queries_find_thai_and_english_notes_across_languages(learned, query, expected, mode):
    answer = learned.client.search(query, mode=mode, limit=3)
    assert not answer.error and not answer.degraded
    assert answer.hits and answer.hits[0].text == expected, [hit.text for hit in answer.hits]


def test_a_learned_note_is_found_by_the_very_next_search_after_a_cached_miss(learned):
    client, cache = learned.client, learned.service.cache
    query = "when does the gym close on Sundays"
    for _ in range(2):
        assert not [hit for hit in client.search(query, mode="fts").hits if "gym" in hit.text]
    assert cache.hits >= 1  # the miss was served from the cache the second time
    client.learn("The gym closes at 6 pm on Sundays.")
    found = client.search(query, mode="fts").hits
    assert found and found[0].text == "The gym closes at 6 pm on Sundays."
    assert client.search("gym opening hours weekend", mode="vector").hits[0].text.startswith("The gym")


def test_a_repeated_search_is_served_from_the_cache(learned):
    client, cache = learned.client, learned.service.cache
    first = client.search("passport expiry")
    hits_before = cache.hits
    again = client.search("  PASSPORT   expiry ")
    assert cache.hits == hits_before + 1
    assert again.hits == first.hits and again.reply == first.reply


def test_learning_the_same_note_twice_stores_it_once(rig):
    first = rig.client.learn("The boiler model is Vaillant ecoTEC.", tags=["home"])
    second = rig.client.learn("The boiler model is Vaillant ecoTEC.", tags=["home"])
    assert first.id == second.id
    assert rig.searcher.documents() == 1


def test_chat_messages_lose_their_command_words_and_replies_speak_the_users_language(rig):
    client = rig.client
    learned = client.ask(LearnRequest(req="l1", text="จำไว้ว่าเบอร์ช่างแอร์คือ 081-234-5678", message=True))
    assert learned.reply.startswith("จดไว้แล้ว")
    answer = client.ask(SearchRequest(req="s1", query="ค้นหาเบอร์ช่างแอร์", message=True))
    assert answer.hits[0].text == "เบอร์ช่างแอร์คือ 081-234-5678"
    assert "เบอร์ช่างแอร์คือ 081-234-5678" in answer.reply and answer.reply.startswith("จากโน้ต")
    recalled = client.ask(RecallRequest(req="r1", topic="what do you know about the air conditioner guy?",
                                        message=True))
    assert recalled.hits[0].text == "เบอร์ช่างแอร์คือ 081-234-5678"
    assert recalled.reply.startswith("Here is what I know")
    latest = client.ask(RecallRequest(req="r2"))
    assert [hit.text for hit in latest.hits] == ["เบอร์ช่างแอร์คือ 081-234-5678"]


def test_filters_apply_to_both_rankings(learned):
    learned.client.learn("Vet appointment for Miso on Friday", tags=["pets"])
    unfiltered = learned.client.search("my cat Miso")
    assert THAI_NOTE in [hit.text for hit in unfiltered.hits]
    answer = learned.client.search("my cat Miso", filters=SearchFilters(tags=("pets",)))
    assert [hit.text for hit in answer.hits] == ["Vet appointment for Miso on Friday"]


BAD_REQUESTS = {
    "empty query": (raw({"type": "search", "req": "b1", "query": ""}), "empty"),
    "100 KB query": (raw({"type": "search", "req": "b2", "query": "ก" * 100_000}), "too long"),
    "only punctuation": (raw({"type": "search", "req": "b3", "query": "?!... ¿¡ ---"}), "only punctuation"),
    "garbage": (b"\xc1\xff not msgpack", "MessagePack map"),
    "unknown type": (raw({"type": "launch", "req": "b5"}), "unknown request type"),
    "wrong field type": (raw({"type": "search", "req": "b6", "query": 42}), "$.query"),
    "bad mode": (raw({"type": "search", "req": "b7", "query": "cat", "mode": "psychic"}), "$.mode"),
    "empty note": (raw({"type": "learn", "req": "b8", "text": "   "}), "empty"),
    "huge note": (raw({"type": "learn", "req": "b9", "text": "x" * 30_000}), "too long"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_requests_get_a_clear_answer_and_the_service_keeps_serving(rig, name):
    data, expected = BAD_REQUESTS[name]
    rig.client.send_raw(data)
    answer = rig.client.recv()
    assert expected in answer.error, (name, answer)
    assert answer.reply  # something a chat user can read
    assert rig.client.learn("still serving").id


def test_with_chroma_killed_search_degrades_to_full_text_and_catches_up_when_it_returns(home, tmp_path_factory):
    chroma = ChromaServer(tmp_path_factory.mktemp("chroma-kill")).start()
    rig = KnowledgeRig(rig_config(home, chroma.port))
    try:
        wait_until_up(rig.index, rig.service)
        client = rig.client
        client.learn(ENGLISH_NOTE)
        chroma.kill()
        answer = client.search("spare house key")
        assert answer.degraded and answer.hits[0].text == ENGLISH_NOTE
        assert "meaning index is unavailable" in answer.reply
        while_down = client.learn("The water meter number is 4471.")
        assert not while_down.indexed
        assert client.search("water meter", mode="vector").degraded  # still answers, from full text
        chroma = ChromaServer(chroma.folder, chroma.port).start()
        # Up alone is not enough: the catch-up has to have run, not merely not started yet.
        wait_for(lambda: rig.index.up and rig.service.counts["caught_up"] == 1 and not rig.service.to_index,
                 CHROMA_DEADLINE, "the search-cache to catch up with the restarted chroma")
        answer = client.search("how much water did we use, what's on the meter", mode="vector")
        assert not answer.degraded
        assert answer.hits[0].text == "The water meter number is 4471."
        assert rig.service.counts["caught_up"] == 1
    finally:
        rig.close()
        chroma.stop()


def test_search_answers_from_full_text_before_chroma_was_ever_reached(home):
    rig = KnowledgeRig(rig_config(home, 9, WARMWIRE_CHROMA_RETRY_INTERVAL="3600"))  # nothing there
    try:
        assert rig.client.learn(f"note {uuid.uuid4().hex[:6]} about the garage code 7781").indexed is False
        answer = rig.client.search("garage code")
        assert answer.degraded and "garage code 7781" in answer.hits[0].text
    finally:
        rig.close()
