"""Knowledge base logic without processes: fusion, chunking, command words, cache keys and
flushes, and full-text search over a real SQLite file (Thai substrings included)."""

from __future__ import annotations

import time
import unicodedata

import pytest

from proto.config import load
from proto.frames import SaveNote, SearchFilters, StoredNote
from services.search_cache.cache import AnswerCache, cache_key
from services.search_cache.fusion import reciprocal_rank_fusion
from services.search_cache.search import BadQuery, Searcher
from services.search_cache.text import chunks, fts_terms, note_id, strip_command, words
from services.store_writer.database import open_writer, save_note
from supervisor.commands.learn import split_notes

CONFIG = load({})


# --- fusion -------------------------------------------------------------------------------

def test_a_note_ranked_well_by_both_rankings_beats_one_ranked_first_by_one():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d", "a"]], k=60)
    assert [key for key, _ in fused][:2] == ["b", "a"]
    assert dict(fused)["b"] == pytest.approx(1 / 62 + 1 / 61)


def test_fusion_of_one_ranking_keeps_its_order_and_ties_keep_first_seen_order():
    assert [key for key, _ in reciprocal_rank_fusion([["x", "y", "z"]], k=60)] == ["x", "y", "z"]
    assert [key for key, _ in reciprocal_rank_fusion([["p"], ["q"]], k=60)] == ["p", "q"]
    assert reciprocal_rank_fusion([[], []], k=60) == []


# --- text ---------------------------------------------------------------------------------

def test_chunks_keep_a_few_sentences_each_and_never_exceed_the_size():
    english = " ".join(f"Sentence number {n} is here." for n in range(10))
    parts = chunks(english, max_chars=80, max_sentences=3)
    assert all(len(part) <= 80 for part in parts)
    assert all(part.count(".") <= 3 for part in parts)
    assert " ".join(parts) == english


def test_thai_is_chunked_at_its_spaces_and_cut_without_splitting_a_vowel_from_its_consonant():
    thai = "แมวของฉันชื่อมิโซะ ชอบกินปลาทูน่า เธออายุสามขวบ นอนทั้งวัน"
    assert chunks(thai, max_chars=300, max_sentences=2) == [
        "แมวของฉันชื่อมิโซะ ชอบกินปลาทูน่า", "เธออายุสามขวบ นอนทั้งวัน"]
    no_spaces = "ที่นี่มีน้ำดื่มฟรี" * 20
    parts = chunks(no_spaces, max_chars=25, max_sentences=3)
    assert "".join(parts) == no_spaces
    assert all(len(part) <= 25 for part in parts)
    assert all(unicodedata.category(part[0]) != "Mn" for part in parts)


def test_words_keep_thai_combining_marks_and_split_at_punctuation():
    assert words("แมวชื่อมิโซะ, ชอบ \"ปลา\"! cat's") == ["แมวชื่อมิโซะ", "ชอบ", "ปลา", "cat", "s"]


@pytest.mark.parametrize("intent, message, rest", [
    ("learn", "remember that I take my coffee black", "I take my coffee black"),
    ("learn", "note: dentist moved to thursday", "dentist moved to thursday"),
    ("learn", "จำไว้ว่ารหัสประตูบ้านคือ 2580", "รหัสประตูบ้านคือ 2580"),
    ("learn", "remember ว่ารหัสตู้คือ 3312", "รหัสตู้คือ 3312"),
    ("search", "search my notes for the alarm code", "the alarm code"),
    ("search", "ค้นหาเบอร์ช่างแอร์", "เบอร์ช่างแอร์"),
    ("recall", "what do you know about my dog?", "my dog"),
    ("recall", "รู้อะไรเกี่ยวกับแมวของฉันบ้าง", "แมวของฉัน"),
    ("search", "wifi password", "wifi password"),
])
def test_command_words_are_taken_off_chat_messages(intent, message, rest):
    assert strip_command(intent, message) == rest


def test_full_text_terms_are_thai_trigrams_and_quoted_english_words_without_stopwords():
    terms = fts_terms('What is the "wifi" password? รหัสไวไฟ', max_terms=64)
    assert terms[:2] == ["wifi", "password"]
    assert "the" not in terms and "what" not in terms
    assert terms[2:] == ["รหั", "สไว", "วไฟ"]  # tiling the run, the last flush with its end
    assert len(fts_terms("ก" * 500, max_terms=10)) <= 10


def test_note_ids_depend_on_source_and_text_only():
    assert note_id("chat", "a note") == note_id("chat", "a note")
    assert note_id("chat", "a note") != note_id("/notes/a.md", "a note")


# --- cache --------------------------------------------------------------------------------

def test_cache_keys_ignore_case_unicode_form_and_spacing_but_not_mode_limit_or_filters():
    nfd = unicodedata.normalize("NFD", "Café  Miso ")
    base = cache_key("search", "café miso", "hybrid", 5, SearchFilters())
    assert cache_key("search", nfd.upper(), "hybrid", 5, SearchFilters()) == base
    assert cache_key("search", "café miso", "fts", 5, SearchFilters()) != base
    assert cache_key("search", "café miso", "hybrid", 6, SearchFilters()) != base
    assert cache_key("search", "café miso", "hybrid", 5, SearchFilters(tags=("pets",))) != base
    assert cache_key("recall", "café miso", "hybrid", 5, SearchFilters()) != base


def test_cache_counts_hits_and_misses_expires_entries_and_is_emptied_by_a_flush():
    now = [0.0]
    cache = AnswerCache(size=2, ttl=300, timer=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1 and cache.get("zzz") is None
    cache.put("c", 3)  # least recently used ("b") goes
    assert cache.get("b") is None and cache.get("c") == 3
    now[0] = 301.0
    assert cache.get("a") is None  # expired
    cache.put("d", 4)
    cache.clear()
    assert cache.get("d") is None
    assert cache.stats() == {"hits": 2, "misses": 4, "size": 0, "hit_ratio": 0.333, "flushes": 1}


def test_a_cache_of_size_zero_is_off():
    cache = AnswerCache(size=0, ttl=300)
    cache.put("a", 1)
    assert cache.get("a") is None and cache.stats()["size"] == 0


# --- full text on a real SQLite file ------------------------------------------------------

NOTES = [
    ("chat", "แมวของฉันชื่อมิโซะ ชอบกินปลาทูน่า", ["pets"]),
    ("chat", "รหัสไวไฟที่บ้านคือ sunflower99 ติดอยู่ที่ตู้เย็น", ["home"]),
    ("chat", "The dentist appointment moved to Thursday at 10", ["health"]),
    ("/notes/car.md", "Car insurance renews in March; the policy number is 88-1020", ["car"]),
    ("chat", "น้ำดื่มหมดแล้ว ต้องสั่งเพิ่มวันจันทร์", []),
]


@pytest.fixture
def knowledge(tmp_path):
    conn = open_writer(tmp_path / "warmwire.db", 30000)

    def save(source: str, text: str, tags: list[str], part: int | None = None, parts: int | None = None) -> str:
        key = note_id(source, text)
        save_note(conn, SaveNote(note=StoredNote(id=key, text=text, source=source, created_at=time.time(),
                                                 tags=tags, part=part, parts=parts)))
        return key

    for source, text, tags in NOTES:
        save(source, text, tags)
    searcher = Searcher(CONFIG.search, tmp_path / "warmwire.db", 30000, index=None)
    yield searcher, save, conn
    searcher.close()
    conn.close()


def texts(hits) -> list[str]:
    return [hit.text for hit in hits]


def full_text(searcher: Searcher, query: str, filters: SearchFilters = SearchFilters()) -> list[str]:
    hits, _ = searcher.full_text(searcher.check(query), filters, 5)
    return texts(hits)


@pytest.mark.parametrize("query, expected", [
    ("มิโซะ", "แมวของฉันชื่อมิโซะ ชอบกินปลาทูน่า"),      # a Thai word inside a sentence
    ("ปลาทู", "แมวของฉันชื่อมิโซะ ชอบกินปลาทูน่า"),       # part of a Thai word
    ("ไวไฟ", "รหัสไวไฟที่บ้านคือ sunflower99 ติดอยู่ที่ตู้เย็น"),
    ("ตู้เย็น", "รหัสไวไฟที่บ้านคือ sunflower99 ติดอยู่ที่ตู้เย็น"),
    ("DENTIST", "The dentist appointment moved to Thursday at 10"),
    ("insur", "Car insurance renews in March; the policy number is 88-1020"),
])
def test_thai_and_english_substrings_are_found_by_full_text(knowledge, query, expected):
    searcher, _, _ = knowledge
    assert full_text(searcher, query)[0] == expected


def test_a_query_shorter_than_a_trigram_is_answered_by_a_scan(knowledge):
    searcher, _, _ = knowledge
    assert full_text(searcher, "น้ำ") == ["น้ำดื่มหมดแล้ว ต้องสั่งเพิ่มวันจันทร์"]
    assert full_text(searcher, "10") == [
        "Car insurance renews in March; the policy number is 88-1020",
        "The dentist appointment moved to Thursday at 10"]
    assert full_text(searcher, "zq") == []


def test_the_note_sharing_most_of_a_thai_phrase_ranks_first(knowledge):
    searcher, _, _ = knowledge
    assert full_text(searcher, "แมวชื่ออะไร กินอะไร")[0] == "แมวของฉันชื่อมิโซะ ชอบกินปลาทูน่า"


def test_filters_narrow_by_tag_source_prefix_and_chat(knowledge):
    searcher, _, _ = knowledge
    assert full_text(searcher, "ที่", SearchFilters(tags=("home",))) == [
        "รหัสไวไฟที่บ้านคือ sunflower99 ติดอยู่ที่ตู้เย็น"]
    assert full_text(searcher, "ที่", SearchFilters(tags=("home", "pets"))) == []
    assert full_text(searcher, "the", SearchFilters(source="/notes/")) == [
        "Car insurance renews in March; the policy number is 88-1020"]
    assert full_text(searcher, "ที่", SearchFilters(chat="elsewhere")) == []


def test_saving_a_note_again_changes_nothing_and_a_new_version_of_a_file_part_supersedes_the_old(knowledge):
    searcher, save, _ = knowledge
    before = searcher.documents()
    save("chat", "แมวของฉันชื่อมิโซะ ชอบกินปลาทูน่า", ["pets"])
    assert searcher.documents() == before
    save("/notes/list.md", "buy milk", [], part=0, parts=2)
    save("/notes/list.md", "buy eggs", [], part=1, parts=2)
    save("/notes/list.md", "buy oat milk", [], part=0, parts=1)  # edited, and now one part only
    assert full_text(searcher, "buy") == ["buy oat milk"]
    assert searcher.documents() == before + 1


def test_a_file_part_edited_more_times_than_a_search_returns_is_still_found(knowledge):
    searcher, save, _ = knowledge
    # Every old version still matches in the full-text index (superseded, not deleted), and
    # ranks as well as the live one; the live one must not be crowded out of the results.
    for version in range(12):
        save("/notes/todo.md", f"renew the boat licence, draft {version}", [], part=0, parts=1)
    assert full_text(searcher, "boat licence") == ["renew the boat licence, draft 11"]


def test_terms_most_notes_contain_are_left_out_of_the_full_text_query(tmp_path):
    conn = open_writer(tmp_path / "warmwire.db", 30000)
    for number in range(20):
        text = f"ต้องจัดการค่าไฟ reference {number}" + (" ประกันรถ" if number == 7 else "")
        save_note(conn, SaveNote(note=StoredNote(id=note_id("t", text), text=text, source="t",
                                                 created_at=time.time())))
    config = load({"WARMWIRE_SEARCH_FTS_COMMON_MIN": "2", "WARMWIRE_SEARCH_FTS_COMMON_SHARE": "0.2"})
    searcher = Searcher(config.search, tmp_path / "warmwire.db", 30000, index=None)
    query = searcher.check("ต้องจัดการประกันรถ reference")
    # The run tiles into ต้อ งจั ดกา รปร ะกั นรถ: the first three are in every note, รปร in none.
    assert sorted(searcher.informative_terms(searcher.reader, query)) == ["นรถ", "ะกั"]
    assert full_text(searcher, "ต้องจัดการประกันรถ reference")[0].endswith("ประกันรถ")
    # Every term common: the rarest one still searches.
    assert len(searcher.informative_terms(searcher.reader, searcher.check("reference"))) == 1
    searcher.close()
    conn.close()


def test_a_word_searched_before_any_note_held_it_finds_the_note_learned_next(knowledge):
    searcher, save, _ = knowledge
    assert full_text(searcher, "kumquat marmalade") == []
    save("chat", "Grandma's kumquat marmalade recipe: two jars of sugar", ["food"])
    assert full_text(searcher, "kumquat marmalade") == ["Grandma's kumquat marmalade recipe: two jars of sugar"]


def test_a_term_that_became_common_as_the_notes_grew_is_left_out_again(tmp_path):
    conn = open_writer(tmp_path / "warmwire.db", 30000)

    def save(text: str) -> None:
        save_note(conn, SaveNote(note=StoredNote(id=note_id("t", text), text=text, source="t",
                                                 created_at=time.time())))

    for number in range(10):
        save(f"reference {number}" + (" plumber visit" if number == 3 else ""))
    config = load({"WARMWIRE_SEARCH_FTS_COMMON_MIN": "2", "WARMWIRE_SEARCH_FTS_COMMON_SHARE": "0.2",
                   "WARMWIRE_SEARCH_FTS_COUNTS_DRIFT": "0.5"})
    searcher = Searcher(config.search, tmp_path / "warmwire.db", 30000, index=None)
    query = searcher.check("plumber visit reference")
    assert "plumber" in searcher.informative_terms(searcher.reader, query)
    for number in range(10):  # twice the notes, past the drift: counted again
        save(f"plumber invoice {number}")
    assert "plumber" not in searcher.informative_terms(searcher.reader, query)
    searcher.close()
    conn.close()


@pytest.mark.parametrize("query, reason", [
    ("", "empty"), ("   \n\t", "empty"), ("?!... ---", "only punctuation"),
    ("x" * 100_000, "too long (100000 characters"),
])
def test_bad_queries_are_refused_with_a_reason(knowledge, query, reason):
    searcher, _, _ = knowledge
    with pytest.raises(BadQuery, match=reason.replace("(", r"\(")):
        searcher.check(query)


def test_limits_default_and_are_capped():
    searcher = Searcher(CONFIG.search, CONFIG.database, 30000, index=None)
    assert searcher.limit(0) == CONFIG.search.default_limit
    assert searcher.limit(10_000) == CONFIG.search.max_limit
    with pytest.raises(BadQuery):
        searcher.limit(-1)


# --- learn: files into notes --------------------------------------------------------------

def test_files_are_split_at_headings_and_packed_up_to_the_note_size():
    text = "# One\n\nfirst para\n\nsecond para\n\n# Two\n\nthird para\n"
    assert split_notes(text, 1500) == ["# One\n\nfirst para\n\nsecond para", "# Two\n\nthird para"]
    long = "\n\n".join(f"Paragraph {n}. " + "word " * 40 for n in range(10))
    notes = split_notes(long, 500)
    assert all(len(note) <= 500 for note in notes) and len(notes) > 1
    thai = " ".join(["แมวของฉันชื่อมิโซะ ชอบกินปลาทูน่า"] * 40)
    assert all(len(note) <= 300 for note in split_notes(thai, 300))
    assert split_notes("\n\n  \n", 300) == []
