"""Router classifier (issue 3): accuracy on held-out data, edge cases, the CLI."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sysconfig
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from services.router.classifier import TIERS, Classifier, Verdict
from services.router.classifier.corpus import load_corpus
from services.router.classifier.evaluate import evaluate, load_jsonl
from services.router.classifier.model import LinearModel
from services.router.classifier import cues, native
from services.router.classifier.scoring import PythonScorer
from services.router.classifier.text import analyse, features, normalise
from services.router.classifier.train import stale_reason
from services.router.classifier.verdict import INTENT_TIER

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
HELDOUT = DATA / "router_heldout.jsonl"
DEV = DATA / "router_dev.jsonl"
ACCURACY_BAR = 0.95
MIN_HELDOUT = 250
THAI_RE = re.compile(r"[\u0e00-\u0e7f]")


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier.load()


def _accuracy_check(clf: Classifier, path: Path) -> None:
    report = evaluate(lambda text: clf.classify(text).tier, load_jsonl(path))
    summary = f"{path.name}\n{report.table()}\nerrors:\n{report.error_lines()}"
    print(summary)
    assert report.accuracy >= ACCURACY_BAR, summary


def test_heldout_accuracy(clf):
    _accuracy_check(clf, HELDOUT)


def test_dev_accuracy(clf):
    _accuracy_check(clf, DEV)


def test_heldout_covers_tiers_and_languages():
    rows = load_jsonl(HELDOUT)
    assert len(rows) >= MIN_HELDOUT
    for tier in TIERS:
        texts = [t for t, label in rows if label == tier]
        assert any(THAI_RE.search(t) for t in texts), f"no Thai {tier} example"
        assert any(not THAI_RE.search(t) for t in texts), f"no English {tier} example"


def test_heldout_is_not_in_training_corpus():
    trained = {normalise(text) for text, _intent in load_corpus()}
    leaked = [text for text, _tier in load_jsonl(HELDOUT) if normalise(text) in trained]
    assert not leaked, f"held-out messages found in the training corpus: {leaked}"


@pytest.fixture(scope="module")
def python_clf() -> Classifier:
    return Classifier.load(native=False)


def _known_texts() -> list[str]:
    return [t for t, _ in load_corpus()] + [t for t, _ in load_jsonl(DEV) + load_jsonl(HELDOUT)]


def _assert_scorer_sums_the_names(scorer: PythonScorer, packed: dict, text: str) -> None:
    norm = normalise(text)
    names = features(text, norm)
    assert scorer.total(analyse(text, norm)) == (sum(packed.get(n, 0) for n in names), len(names)), text


def test_scoring_without_names_sums_the_weights_of_the_trained_names(python_clf):
    """Scoring builds no feature names (scoring.py); it must add up exactly the weights of
    the names training sees, or the shipped model is not the model that was trained."""
    for text in _known_texts():
        _assert_scorer_sums_the_names(python_clf.scorer, python_clf.model.packed, text)


# Thai (with Thai digits and unassigned code points of the block), Latin, digits, spaces,
# newlines, punctuation and emoji: the characters each feature family reacts to.
_MIXED_TEXT = st.lists(st.sampled_from(
    list("กขคงจชซดตนบปผพฟมยรลวสหอฮะัาำิีึืุูเแโใไ่้๊๋็์ๆฯ๐๑๕\u0e00\u0e7f")
    + list("abcxyzHIT 0159'\n\t?!.,:-/_()`😀👍…ß")
    + ["hi", "thanks", "ครับ", "ค้นหา", "remember that", "how do i", "555"]),
    max_size=80).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_MIXED_TEXT)
def test_scoring_without_names_on_any_text(python_clf, text):
    _assert_scorer_sums_the_names(python_clf.scorer, python_clf.model.packed, text)


def _c_compiler() -> str | None:
    """The compiler pip's build would use (setuptools reads $CC first)."""
    return shutil.which((os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0])


def test_c_extension_is_built_where_it_can_be(clf):
    """pip builds the C extension when a compiler is there; without one the classifier falls
    back to Python (and says so in its log), which is slower but gives the same answers."""
    if _c_compiler() is None:
        pytest.skip("no C compiler: the pure-Python scorer and cue regex are in use")
    assert native.extension is not None, f"C extension not built: {native.MISSING}"
    assert not isinstance(clf.scorer, PythonScorer)
    assert cues.thai_cues is not cues.thai_cues_by_regex


@pytest.fixture(scope="module")
def c_clf(clf) -> Classifier:
    if isinstance(clf.scorer, PythonScorer):
        pytest.skip(f"C extension not built: {native.MISSING}")
    return clf


def _assert_scorers_agree(clf: Classifier, python_clf: Classifier, text: str) -> None:
    analysis = analyse(text, normalise(text))
    assert clf.scorer.decide(analysis) == python_clf.scorer.decide(analysis), text
    assert clf.classify(text) == python_clf.classify(text), text


def test_c_and_python_scorers_agree_on_every_known_message(c_clf, python_clf):
    """The C scorer is the Python one made fast: the same tier, intent and confidence."""
    for text in _known_texts():
        _assert_scorers_agree(c_clf, python_clf, text)


@settings(max_examples=300, deadline=None)
@given(text=_MIXED_TEXT)
def test_c_and_python_scorers_agree_on_any_text(c_clf, python_clf, text):
    _assert_scorers_agree(c_clf, python_clf, text)


def _assert_thai_cues_agree(text: str) -> None:
    for form in (text, normalise(text)):
        assert cues.thai_cues(form) == cues.thai_cues_by_regex(form), form


def test_c_phrase_matcher_finds_the_thai_cues_the_regex_finds(c_clf):
    """Leftmost, longest at each position, not overlapping: as the trie regex's findall."""
    for text in _known_texts():
        _assert_thai_cues_agree(text)


# Thai cue phrases, their beginnings (a match must back off to a shorter phrase) and
# characters, run together: where leftmost-longest matching can go wrong.
_THAI_PHRASE_PARTS = sorted({p[:k] for p in cues._TH_PHRASES for k in range(1, len(p) + 1)})
_THAI_PHRASE_TEXT = st.lists(st.one_of(st.sampled_from(sorted(cues._TH_PHRASES)),
                                       st.sampled_from(_THAI_PHRASE_PARTS),
                                       st.sampled_from(list("กขค ๆ?a"))),
                             max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_MIXED_TEXT | _THAI_PHRASE_TEXT)
def test_c_phrase_matcher_agrees_with_the_regex_on_any_text(c_clf, text):
    _assert_thai_cues_agree(text)


def test_c_scorer_rejects_a_malformed_analysis_without_crashing(c_clf, python_clf):
    text = "ช่วยค้นโน้ต hello"
    analysis = analyse(text, normalise(text))
    with pytest.raises(TypeError):
        c_clf.scorer.decide(analysis[:-1])
    with pytest.raises(ValueError):  # a "Thai run" with a Latin letter in it
        c_clf.scorer.decide((["ค้นx"],) + analysis[1:])
    assert c_clf.scorer.decide(analysis) == python_clf.scorer.decide(analysis)


def test_shipped_weights_match_corpus_and_feature_code():
    assert stale_reason(LinearModel.load().meta) is None, stale_reason(LinearModel.load().meta)


@pytest.mark.parametrize("text,tier", [
    ("hello there, good morning", "inline"),
    ("thanks so much, that's great", "inline"),
    ("สวัสดีครับ", "inline"),
    ("โอเค ขอบคุณค่ะ", "inline"),
    ("search my notes for the boiler manual", "oracle-only"),
    ("remember that my bike lock code is 5512", "oracle-only"),
    ("ค้นหาโน้ตเรื่องค่าเทอมลูก", "oracle-only"),
    ("จำไว้ว่าพรุ่งนี้ต้องไปธนาคาร", "oracle-only"),
    ("how many minutes in a day?", "container-light"),
    ("translate 'good luck' into Spanish", "container-light"),
    ("ประเทศไทยมีกี่จังหวัดคะ", "container-light"),
    ("แปลคำว่า กำลังใจ เป็นภาษาอังกฤษ", "container-light"),
    ("write a python function that parses ISO dates and add tests", "container-full"),
    ("compare renting and buying a house over ten years", "container-full"),
    ("เขียนโค้ด python อ่านไฟล์ json", "container-full"),
    ("วางแผนเที่ยวภูเก็ต 4 วัน พร้อมงบประมาณ", "container-full"),
])
def test_each_tier_in_both_languages(clf, text, tier):
    assert clf.classify(text).tier == tier


@pytest.mark.parametrize("text,tier", [
    ("hi! can you debug this stack trace", "container-full"),
    ("thanks! now translate 'good night' to Thai", "container-light"),
    ("remember that X. then analyse my spending and make a plan", "container-full"),
    ("show me what I saved about the VPN", "oracle-only"),
    ("สวัสดีค่ะ ช่วยเขียนสคริปต์ backup ฐานข้อมูลให้หน่อย", "container-full"),
    ("ขอบคุณครับ แล้ว 1 ฟุตกี่เซนติเมตร", "container-light"),
])
def test_mixed_messages_go_to_the_real_request(clf, text, tier):
    assert clf.classify(text).tier == tier


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n", "\u3000"])
def test_empty_and_whitespace(clf, text):
    verdict = clf.classify(text)
    assert (verdict.tier, verdict.intent) == ("inline", "empty")
    assert "empty" in verdict.reason


@pytest.mark.parametrize("unit", ["word ", "คำ", "x", "```code``` "])
def test_100kb_message_is_container_full(clf, unit):
    text = unit * (100_000 // len(unit.encode("utf-8")) + 1)
    verdict = clf.classify(text)
    assert verdict.tier == "container-full"
    assert verdict.intent == "long"
    assert "long message" in verdict.reason


def test_thai_digits(clf):
    assert normalise("๑๒๓ abc 456") == normalise("123 abc 456")
    assert clf.classify("๑ ไมล์กี่กิโลเมตร").tier == "container-light"
    assert clf.classify("บันทึก รหัสห้องประชุม ๔๔๓๒").tier == "oracle-only"


def test_thai_laughter_is_not_a_number(clf):
    assert clf.classify("5555555").tier == "inline"


@pytest.mark.parametrize("text,intent", [
    ("🙏", "thanks"), ("👍👍", "ack"), ("👋", "greeting"), ("😂😂😂", "smalltalk"), ("...", "smalltalk"),
])
def test_emoji_only(clf, text, intent):
    verdict = clf.classify(text)
    assert (verdict.tier, verdict.intent) == ("inline", intent)


@pytest.mark.parametrize("text", ["/start", "/help@warmwire_bot", "/lang th", "  /reset  "])
def test_slash_command(clf, text):
    verdict = clf.classify(text)
    assert (verdict.tier, verdict.intent) == ("inline", "command")
    assert verdict.reason.startswith("command /")


def test_path_is_not_a_command(clf):
    assert clf.classify("/etc/nginx/nginx.conf returns 403, fix the config").tier == "container-full"
    assert clf.classify("/var is full, clean up old logs").intent != "command"


def test_code_block(clf):
    verdict = clf.classify("what does this do?\n```\nprint(1)\n```")
    assert (verdict.tier, verdict.reason) == ("container-full", "code block")


def test_verdict_shape(clf):
    verdict = clf.classify("what's the capital of Japan?")
    assert isinstance(verdict, Verdict)
    assert verdict.tier in TIERS
    assert INTENT_TIER[verdict.intent] == verdict.tier
    assert verdict.reason
    assert verdict.confidence is None or 0.0 <= verdict.confidence <= 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.tier = "inline"  # type: ignore[misc]
    assert TIERS == ("inline", "oracle-only", "container-light", "container-full")


def test_oracle_intents(clf):
    assert clf.classify("search my notes for the wifi password").intent == "search"
    assert clf.classify("remember that the gate code is 1234").intent == "learn"
    assert clf.classify("what did I tell you about my landlord?").intent == "recall"


def _run_cli(stdin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.router.classifier", *args],
                          input=stdin.encode("utf-8"), capture_output=True, cwd=ROOT, timeout=60)


def test_cli_preserves_order_and_reports_bad_lines():
    lines = [
        json.dumps({"text": "hi"}),
        "this is not json",
        json.dumps({"text": "write a bash script that rotates logs"}),
        json.dumps({"no_text": 1}),
        json.dumps({"text": "ค้นหาโน้ตเรื่องประกัน"}, ensure_ascii=False),
        json.dumps([1, 2]),
        json.dumps({"text": 42}),
        json.dumps({"text": ""}),
    ]
    proc = _run_cli("\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr.decode()
    out = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert len(out) == len(lines)
    assert out[0]["tier"] == "inline"
    assert "error" in out[1]
    assert out[2]["tier"] == "container-full"
    assert "error" in out[3]
    assert out[4]["tier"] == "oracle-only"
    assert "error" in out[5] and "error" in out[6]
    assert out[7]["tier"] == "inline"
    assert all("reason" in row for row in out if "error" not in row)


def test_cli_survives_invalid_utf8():
    proc = subprocess.run([sys.executable, "-m", "services.router.classifier"],
                          input=b'{"text": "ok"}\n\xff\xfe garbage\n{"text": "thanks"}\n',
                          capture_output=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    out = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert len(out) == 3 and "error" in out[1] and out[2]["tier"] == "inline"


def test_lone_surrogates_from_json_escapes_are_classified_not_a_crash():
    """JSON may escape half a surrogate pair ("\\ud800"); the stream must go on."""
    lines = [json.dumps({"text": "\ud800 please debug this python function for me"}),
             json.dumps({"text": "\udc00สวัสดี ช่วยด้วย"}),
             json.dumps({"text": "thanks"})]
    assert "\\ud800" in lines[0]  # json.dumps writes a lone surrogate as an escape
    proc = _run_cli("\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr.decode()
    out = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert len(out) == 3 and all("tier" in row for row in out), out
    assert out[0]["tier"] == "container-full" and out[2]["tier"] == "inline"


def test_cli_help():
    proc = _run_cli("", "--help")
    assert proc.returncode == 0
    assert b"tier" in proc.stdout
