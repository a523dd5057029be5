"""The labelled training corpus that ships with the package, and its deterministic augmentation.

Corpus files (data/corpus/*.txt) are plain text: "[intent]" opens a section, each other line
is one message ("\\n" inside a line stands for a newline), "#" starts a comment line.
"""
from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

from .verdict import FULL, INLINE, LEARNED_INTENTS, LIGHT, ORACLE

CORPUS_DIR = Path(__file__).with_name("data") / "corpus"
_SECTION_RE = re.compile(r"^\[([a-z]+)\]$")
_THAI_RE = re.compile(r"[\u0e00-\u0e7f]")
_LATIN_RE = re.compile(r"[A-Za-z]")

Example = tuple[str, str]  # (text, intent)


def corpus_files() -> list[Path]:
    return sorted(CORPUS_DIR.glob("*.txt"))


def corpus_digest() -> str:
    """SHA-256 over every corpus file, stored with the weights to detect stale weights."""
    digest = hashlib.sha256()
    for path in corpus_files():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# The code that turns text into features: weights trained under other code are stale.
FEATURE_SOURCES = ("text.py", "cues.py")


def feature_digest() -> str:
    """SHA-256 over the featurisation source, stored with the weights like corpus_digest."""
    digest = hashlib.sha256()
    for name in FEATURE_SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def load_corpus() -> list[Example]:
    examples: list[Example] = []
    for path in corpus_files():
        intent = None
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            section = _SECTION_RE.match(line)
            if section:
                intent = section.group(1)
                if intent not in LEARNED_INTENTS:
                    raise ValueError(f"{path.name}:{lineno}: unknown intent {intent!r}")
                continue
            if intent is None:
                raise ValueError(f"{path.name}:{lineno}: message before any [intent] section")
            examples.append((line.replace("\\n", "\n"), intent))
    return examples


# --- augmentation --------------------------------------------------------------------------
# Variants teach the model what does NOT change the tier: a leading pleasantry, a Thai
# politeness particle, a missing question mark, a typo.  Probabilities are per example.

P_OPENER = 0.3
P_PARTICLE = 0.5
P_NO_QMARK = 0.5
P_TYPO = 0.3
# Compound "note this. then do that" messages: the more expensive request decides the tier.
N_COMPOUNDS = 120
MIN_TYPO_WORD = 4

OPENERS_EN = ("hi! ", "hey, ", "hello, ", "thanks! ", "thank you. ", "ok, ", "ok so ",
              "great, ", "cool. ", "hi there, ", "good morning! ", "thx, ", "alright, ")
OPENERS_TH = ("สวัสดีครับ ", "สวัสดีค่ะ ", "หวัดดี ", "ขอบคุณครับ ", "ขอบคุณค่ะ ", "โอเค ",
              "ดีจ้า ", "ขอบใจนะ ", "ได้เลย ", "อ้อ แล้ว ")
PARTICLES_TH = ("ครับ", "ค่ะ", "คะ", "นะ", "จ้า", "หน่อย", "นะครับ", "นะคะ", "จ๊ะ", "น้า", "ด้วย")
JOINERS = (". then ", ". also ", ", and then ", " แล้ว", " แล้วก็", ". after that ")


def _is_thai(text: str) -> bool:
    return _THAI_RE.search(text) is not None


def _typo(text: str, rng: random.Random) -> str | None:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= MIN_TYPO_WORD and w.isalpha()
                  and _LATIN_RE.match(w)]
    if not candidates:
        return None
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(len(w) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]   # swap neighbours
    elif kind == 1:
        w = w[:j] + w[j + 1:]                     # drop a letter
    else:
        w = w[:j] + w[j] + w[j:]                  # double a letter
    words[i] = w
    return " ".join(words)


def augment(examples: list[Example], seed: int) -> list[Example]:
    """Return the examples followed by deterministic variants of them."""
    rng = random.Random(seed)
    out = list(examples)
    for text, intent in examples:
        tier = LEARNED_INTENTS[intent]
        thai = _is_thai(text)
        if tier != INLINE and "\n" not in text and rng.random() < P_OPENER:
            opener = rng.choice(OPENERS_TH if thai and rng.random() < 0.8 else OPENERS_EN)
            out.append((opener + text, intent))
        if thai and rng.random() < P_PARTICLE and not text.endswith(PARTICLES_TH):
            out.append((text.rstrip("?") + rng.choice(PARTICLES_TH), intent))
        if text.endswith("?") and rng.random() < P_NO_QMARK:
            out.append((text.rstrip("?"), intent))
        if not thai and rng.random() < P_TYPO:
            typo = _typo(text, rng)
            if typo:
                out.append((typo, intent))
    notes = [(t, i) for t, i in examples if i in ("learn", "search") and "\n" not in t]
    requests = [(t, i) for t, i in examples
                if LEARNED_INTENTS[i] == FULL and len(t) < 120 and "\n" not in t]
    for _ in range(N_COMPOUNDS):
        note, _intent = rng.choice(notes)
        request, intent = rng.choice(requests)
        joiner = rng.choice(JOINERS)
        out.append((note.rstrip(".") + joiner + request, intent))
    return out


def tier_counts(examples: list[Example]) -> dict[str, int]:
    counts = {INLINE: 0, ORACLE: 0, LIGHT: 0, FULL: 0}
    for _text, intent in examples:
        counts[LEARNED_INTENTS[intent]] += 1
    return counts
