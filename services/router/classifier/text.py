"""Text normalisation and featurisation shared by training and classification.

Thai is written without spaces between words, so Thai runs are described by character
n-grams, which need no word segmentation.  Latin text is described by words, word pairs and
four-letter word prefixes (a cheap stemmer: analyse/analysis/analyze share "anal").  Cue
groups (cues.py), the edges of the message, punctuation marks and a handful of structural
features (length, script, code-like symbols, ...) are added for both.
"""
from __future__ import annotations

import re
from bisect import bisect_left

from .cues import cue_features

# --- normalisation -------------------------------------------------------------------------

# Thai digits ๐-๙ and ASCII digits all become "0": the value of a number never decides the
# tier, only that there is one.  (A regex substitution: str.translate is slow on Thai text.)
_DIGIT_RE = re.compile(r"[0-9๐-๙]")
# "555" is Thai internet laughter (5 is pronounced "ha"); keep it apart from real numbers.
_LAUGH_RE = re.compile(r"(?<![0-9๐-๙])[5๕]{3,}(?![0-9๐-๙])")
_LAUGH_TOKEN = " ฮ่าๆ "
# Stretched letters ("thanksss", "ค่าาาา") are reduced to two, which keeps the emphasis
# signal while mapping every stretch length to the same features.
_REPEAT_RE = re.compile(r"(.)\1\1+")
_URL_RE = re.compile(r"(?:https?://|www\.)\S+")
_URL_TOKEN = " url "


def normalise(text: str) -> str:
    """Lower-cased, digit-folded, whitespace-collapsed text."""
    # Cheap tests skip the regexes on messages they cannot change.
    if _DIGIT_RE.search(text):
        if "5" in text or "๕" in text:
            text = _LAUGH_RE.sub(_LAUGH_TOKEN, text)
        text = _DIGIT_RE.sub("0", text)
    text = text.lower()
    if "http" in text or "www." in text:
        text = _URL_RE.sub(_URL_TOKEN, text)
    if _REPEAT_RE.search(text):  # sub() costs several times more than a failed search
        text = _REPEAT_RE.sub(r"\1\1", text)
    return " ".join(text.split())


# --- featurisation -------------------------------------------------------------------------

# Only a bounded window of a message is featurised, so cost does not grow with length:
# the head carries the request, the tail often the actual question ("... what should I do?").
WINDOW_HEAD_CHARS = 80
WINDOW_TAIL_CHARS = 30
THAI_NGRAM_SIZES = (3,)
# Anchored prefixes/suffixes of the whole message: imperative verbs and Thai question or
# politeness particles (ไหม, หน่อย, ครับ) sit at the edges.
EDGE_SIZES = (2, 4)
PREFIX_CHARS = 4
LEADING_WORDS = 2

# Length buckets (characters of the stripped original text); the last bucket is "longer".
LENGTH_BUCKETS = (4, 12, 30, 60, 120, 250, 400)
WORD_BUCKETS = (1, 2, 4, 8, 16, 40)
# A few of these symbols are normal prose; many suggest code, paths or data.
CODE_SYMBOL_BUCKETS = (0, 2, 5)
_CODE_SYMBOL_RE = re.compile(r"[{}\[\]()<>=;$\\|`_/#*]")

_LATIN_WORD_RE = re.compile(r"[a-z0][a-z0']*")
_THAI_RUN_RE = re.compile(r"[\u0e00-\u0e7f]+")
_LATIN_RE = re.compile(r"[a-z]")
# Punctuation and symbols ("?", ":", quotes, emoji) as single-character features.
_MARK_RE = re.compile(r"[^\w\s\u0e00-\u0e7f]")
# Emoji and pictographs (the main blocks; enough to notice "this message has emoji").
_EMOJI_RE = re.compile("[\u2600-\u27bf\U0001f000-\U0001faff]")

# Feature-name prefixes keep the families apart (a Thai n-gram never equals a word).
BIAS = "\x00bias"
_EDGE_START, _EDGE_END = "\x01<", "\x01>"
_WORD, _PAIR, _LEAD, _SHAPE, _PREFIX = "\x02", "\x03", "\x04", "\x05", "\x07"


# Shape feature names, built once: one per bucket.
_LENGTH_FEATS = tuple(f"{_SHAPE}len{i}" for i in range(len(LENGTH_BUCKETS) + 1))
_WORDS_FEATS = tuple(f"{_SHAPE}words{i}" for i in range(len(WORD_BUCKETS) + 1))
_SYMBOL_FEATS = tuple(f"{_SHAPE}sym{i}" for i in range(len(CODE_SYMBOL_BUCKETS) + 1))
_SCRIPT_FEATS = {(thai, latin): f"{_SHAPE}script{int(thai)}{int(latin)}"
                 for thai in (False, True) for latin in (False, True)}


def _bucket(value: int, bounds: tuple[int, ...]) -> int:
    """Index of the first bound >= value (len(bounds) when above them all)."""
    return bisect_left(bounds, value)


def window(text: str) -> str:
    if len(text) <= WINDOW_HEAD_CHARS + WINDOW_TAIL_CHARS:
        return text
    return text[:WINDOW_HEAD_CHARS] + " … " + text[-WINDOW_TAIL_CHARS:]


def features(raw: str, norm: str) -> list[str]:
    """Feature names of one message (`norm` is `normalise(raw)`); a repeat counts twice."""
    text = window(norm)
    feats = [BIAS]
    thai_runs = _THAI_RUN_RE.findall(text)
    for run in thai_runs:
        padded = f" {run} "
        last = len(padded) + 1
        for size in THAI_NGRAM_SIZES:
            feats += [padded[i:i + size] for i in range(last - size)]
    feats += [_EDGE_START + text[:k] for k in EDGE_SIZES]
    feats += [_EDGE_END + text[-k:] for k in EDGE_SIZES]
    feats += set(_MARK_RE.findall(text))

    words = _LATIN_WORD_RE.findall(text)
    feats += cue_features(text, words)
    if words:
        feats += [_WORD + w for w in words]
        feats += [_PREFIX + w[:PREFIX_CHARS] for w in words if len(w) > PREFIX_CHARS]
        feats += [_PAIR + pair for pair in map(" ".join, zip(words, words[1:]))]
        feats.append(_LEAD + " ".join(words[:LEADING_WORDS]))
        feats.append(_LEAD + words[0])

    feats += (
        _LENGTH_FEATS[_bucket(len(raw.strip()), LENGTH_BUCKETS)],
        _WORDS_FEATS[_bucket(text.count(" ") + 1, WORD_BUCKETS)],
        _SYMBOL_FEATS[_bucket(len(_CODE_SYMBOL_RE.findall(text)), CODE_SYMBOL_BUCKETS)],
        _SCRIPT_FEATS[bool(thai_runs), bool(words) and _LATIN_RE.search(text) is not None],
    )
    if "\n" in raw:
        feats.append(_SHAPE + "multiline")
    if "0" in text:
        feats.append(_SHAPE + "digit")
    if _EMOJI_RE.search(text):
        feats.append(_SHAPE + "emoji")
    return feats
