"""Text normalisation and featurisation shared by training and classification.

Thai is written without spaces between words, so Thai runs are described by character
n-grams, which need no word segmentation.  Latin text is described by words, the first one
or two words, and four-letter word prefixes (a cheap stemmer: analyse/analysis/analyze share
"anal").  Word pairs feed the cue groups but are no features of their own: a third of them
are unknown to the model, and 5-fold cross-validation on the corpus scores the same (within
one message of 2,623) without them.  Cue
groups (cues.py), the edges of the message, punctuation marks and a handful of structural
features (length, script, code-like symbols, ...) are added for both.
"""
from __future__ import annotations

import codecs
import re
from bisect import bisect_left
from collections.abc import Iterable
from operator import itemgetter

from .cues import cue_features

# --- normalisation -------------------------------------------------------------------------

# Thai digits ๐-๙ and ASCII digits all become "0": the value of a number never decides the
# tier, only that there is one.  ASCII text is folded and lower-cased by one bytes.translate;
# other text by a regex substitution (str.translate is slow on Thai text).  "0" itself is
# left out of the pattern: replacing it by itself would be wasted work.
_DIGIT_RE = re.compile(r"[1-9๐-๙]")
_ASCII_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ123456789",
                              b"abcdefghijklmnopqrstuvwxyz000000000")
# "555" is Thai internet laughter (5 is pronounced "ha"); keep it apart from real numbers:
# three or more 5s with no digit on either side.  The pattern starts with the 5 itself (the
# look-behind checks the character before it), so re skips quickly to the 5s.
_LAUGH_RE = re.compile(r"[5๕](?<![0-9๐-๙][5๕])[5๕]{2,}(?![0-9๐-๙])")
_LAUGH_TOKEN = " ฮ่าๆ "
# Stretched letters ("thanksss", "ค่าาาา") are reduced to two, which keeps the emphasis
# signal while mapping every stretch length to the same features: a character is dropped
# when the next two are the same character (a literal "" replacement, which re does in C).
_STRETCH_RE = re.compile(r"(.)\1\1")
_ZEROS_RE, _TWO_ZEROS = re.compile("000+"), "00"
_STRETCHED_RE = re.compile(r"(.)(?=\1\1)")
_URL_RE = re.compile(r"(?:https?://|www\.)\S+")
_URL_TOKEN = " url "


def normalise(text: str) -> str:
    """Lower-cased, digit-folded, whitespace-collapsed text."""
    # Cheap tests skip the regexes on messages they cannot change: laughter needs "555" or ๕.
    if "555" in text or "๕" in text:
        text = _LAUGH_RE.sub(_LAUGH_TOKEN, text)
    if text.isascii():
        text = text.encode("ascii").translate(_ASCII_FOLD).decode("ascii")
    else:
        if _DIGIT_RE.search(text):
            text = _DIGIT_RE.sub("0", text)
        text = text.lower()
    if "000" in text:  # numbers are the common stretch; shortened here by a fast literal scan
        text = _ZEROS_RE.sub(_TWO_ZEROS, text)
    # A URL has "://" or "www."; one-character tests are the cheap ones on Thai text.
    if (":" in text or "." in text) and ("http" in text or "www." in text):
        text = _URL_RE.sub(_URL_TOKEN, text)
    stretch = _STRETCH_RE.search(text)
    if stretch:  # nothing before the first stretch changes, so sub() starts there
        start = stretch.start()
        text = text[:start] + _STRETCHED_RE.sub("", text[start:])
    return " ".join(text.split())


# --- featurisation -------------------------------------------------------------------------

# Only a bounded window of a message is featurised, so cost does not grow with length:
# the head carries the request, the tail often the actual question ("... what should I do?").
# 64 + 24 cross-validated as well as 80 + 30 with fewer features on long messages; 48 + 20
# was worse.
WINDOW_HEAD_CHARS = 64
WINDOW_TAIL_CHARS = 24
THAI_NGRAM_CHARS = 3
# Anchored prefixes/suffixes of the whole message: imperative verbs and Thai question or
# politeness particles (ไหม, หน่อย, ครับ) sit at the edges.
EDGE_SIZES = (2, 4)
PREFIX_CHARS = 4

# Length buckets (characters of the stripped original text); the last bucket is "longer".
LENGTH_BUCKETS = (4, 12, 30, 60, 120, 250, 400)
WORD_BUCKETS = (1, 2, 4, 8, 16, 40)
# A few of these symbols are normal prose; many suggest code, paths or data.
CODE_SYMBOL_BUCKETS = (0, 2, 5)
_CODE_SYMBOLS = "{}[]()<>=;$\\|`_/#*"
_CODE_SYMBOL_BYTES = _CODE_SYMBOLS.encode("ascii")

_LATIN_WORD_RE = re.compile(r"[a-z0][a-z0']*")
_THAI_RUN_RE = re.compile(r"[\u0e00-\u0e7f]+")
_LATIN_RE = re.compile(r"[a-z]")
# Punctuation and symbols ("?", ":", quotes, emoji) as single-character features.
_MARK_RE = re.compile(r"[^\u0e00-\u0e7f\s\w]")  # Thai first: the common case on non-ASCII text
# Emoji and pictographs (the main blocks; enough to notice "this message has emoji").
_EMOJI_RE = re.compile("[\u2600-\u27bf\U0001f000-\U0001faff]")

# Feature-name prefixes keep the families apart (a Thai n-gram never equals a word).  Names
# are what training sees and the weights file stores; scoring never builds them (see
# scoring.py).
BIAS = "\x00bias"
_EDGE_START, _EDGE_END = "\x01<", "\x01>"
_WORD, _LEAD, _SHAPE, _PREFIX = "\x02", "\x04", "\x05", "\x07"

# Shape feature names, built once (so their hashes are computed once): one per bucket, the
# bucket being the index of the first bound >= the value (bisect_left).
_LENGTH_FEATS = tuple(f"{_SHAPE}len{i}" for i in range(len(LENGTH_BUCKETS) + 1))
_WORDS_FEATS = tuple(f"{_SHAPE}words{i}" for i in range(len(WORD_BUCKETS) + 1))
_SYMBOL_FEATS = tuple(f"{_SHAPE}sym{i}" for i in range(len(CODE_SYMBOL_BUCKETS) + 1))
_SCRIPT_FEATS = {(thai, latin): f"{_SHAPE}script{int(thai)}{int(latin)}"
                 for thai in (False, True) for latin in (False, True)}
_MULTILINE, _DIGIT, _EMOJI = _SHAPE + "multiline", _SHAPE + "digit", _SHAPE + "emoji"
# Several families are read from the text's UTF-8 bytes with bytes.translate, one C loop
# each: ASCII symbols and letters never occur inside a multi-byte character.
_NON_MARK_BYTES = bytes(c for c in range(128) if not _MARK_RE.match(chr(c)))  # in ASCII text
_LATIN_WORD_CHARS = b"abcdefghijklmnopqrstuvwxyz0'"
# Every byte that cannot be in a word becomes a space; split() then finds the words.
_WORDS_SPACED = bytes(c if c in _LATIN_WORD_CHARS else ord(" ") for c in range(256))
# The edges of a text as one C call each: (text[:k] for k in EDGE_SIZES), (text[-k:] ...).
# EDGE_SIZES needs two or more sizes: an itemgetter of one item returns it bare, not in a tuple.
_HEADS = itemgetter(*(slice(None, k) for k in EDGE_SIZES))
_TAILS = itemgetter(*(slice(-k, None) for k in EDGE_SIZES))

# A Thai trigram is scored as an integer, not a string: each character of the Thai block
# U+0E00-U+0E7F becomes one byte (its low UTF-16 byte) and the space padding a run becomes
# RUN_EDGE, so all trigrams of a message come out of a few C-level byte operations.
THAI_BLOCK_START = 0x0E00
RUN_EDGE = 0x80
_RUN_EDGE_CHAR = chr(RUN_EDGE)  # its low UTF-16 byte is RUN_EDGE; never inside a Thai run
_CODE_BYTES = 4  # one unsigned int ("I") per n-gram
# The codec's own function: str.encode("utf-16-le") looks the codec up by name on each call.
_UTF16_LE = codecs.getencoder("utf-16-le")


# A cut message gets the mark "…" (the model learns that the middle is missing).  The two
# parts are joined by two spaces, which split words and Thai runs and count as two spaces in
# the word count, as " … " would, but keep an ASCII message ASCII (the cheap scans below).
_CUT_MARK, _CUT_JOINT = "…", "  "


# The feature families of an analysis, in order, after its Thai runs (see `analyse`).
FAMILIES = ("heads", "tails", "marks", "cues", "words", "prefixes", "leads", "shape")


def analyse(raw: str, norm: str) -> tuple:
    """The parts every feature is made of: (Thai runs, then one collection per FAMILIES entry).

    Shared by `features` (names, for training) and the scorers (scoring.py), which look each
    part up as it is, without building names.
    """
    cut = len(norm) > WINDOW_HEAD_CHARS + WINDOW_TAIL_CHARS
    text = norm[:WINDOW_HEAD_CHARS] + _CUT_JOINT + norm[-WINDOW_TAIL_CHARS:] if cut else norm
    try:
        utf8 = text.encode()
    except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800") is no text: read it as "?"
        utf8 = text.encode("utf-8", "replace")
        text = utf8.decode("utf-8")
    ascii_only = text.isascii()  # no Thai, no emoji: several scans can be skipped
    thai_runs = () if ascii_only else _THAI_RUN_RE.findall(text)
    if ascii_only:
        marks = set(utf8.translate(None, _NON_MARK_BYTES).decode("ascii"))
    else:
        marks = set(_MARK_RE.findall(text))
    if cut:
        marks.add(_CUT_MARK)
    spaced = utf8.translate(_WORDS_SPACED).decode("ascii")
    # A word starts with a letter or 0: only an apostrophe opening a run needs the regex.
    if " '" in spaced or spaced.startswith("'"):
        words = _LATIN_WORD_RE.findall(text)
    else:
        words = spaced.split()
    cues = cue_features(text, words, ascii_only)
    if words:
        prefixes = [w[:PREFIX_CHARS] for w in words if len(w) > PREFIX_CHARS]
        # The first two words, the first.
        leads = (f"{words[0]} {words[1]}" if len(words) > 1 else words[0], words[0])
    else:
        prefixes, leads = [], ()
    symbols = len(utf8) - len(utf8.translate(None, _CODE_SYMBOL_BYTES))
    shape = [
        _LENGTH_FEATS[bisect_left(LENGTH_BUCKETS, len(raw.strip()))],
        _WORDS_FEATS[bisect_left(WORD_BUCKETS, text.count(" ") + 1)],
        _SYMBOL_FEATS[bisect_left(CODE_SYMBOL_BUCKETS, symbols)],
        _SCRIPT_FEATS[bool(thai_runs), bool(words) and _LATIN_RE.search(text) is not None],
    ]
    if "\n" in raw:
        shape.append(_MULTILINE)
    if "0" in text:
        shape.append(_DIGIT)
    if not ascii_only and _EMOJI_RE.search(text):
        shape.append(_EMOJI)
    return thai_runs, _HEADS(text), _TAILS(text), marks, cues, words, prefixes, leads, shape


def features(raw: str, norm: str) -> list[str]:
    """Feature names of one message (`norm` is `normalise(raw)`); a repeat counts twice."""
    thai_runs, heads, tails, marks, cues, words, prefixes, leads, shape = analyse(raw, norm)
    feats = [BIAS]
    for run in thai_runs:
        padded = f" {run} "
        feats += [padded[i:i + THAI_NGRAM_CHARS] for i in range(len(run))]
    feats += [_EDGE_START + head for head in heads]
    feats += [_EDGE_END + tail for tail in tails]
    feats += marks
    feats += cues
    feats += [_WORD + w for w in words]
    feats += [_PREFIX + p for p in prefixes]
    feats += [_LEAD + lead for lead in leads]
    feats += shape
    return feats


def _ngram_codes(edged: bytes) -> memoryview:
    """The trigrams of `edged` (one byte per character) as unsigned ints, in order."""
    count = len(edged) - THAI_NGRAM_CHARS + 1
    packed = bytearray(_CODE_BYTES * count)
    for offset in range(THAI_NGRAM_CHARS):  # byte `offset` of every code, in one C loop
        packed[offset::_CODE_BYTES] = edged[offset:offset + count]
    return memoryview(packed).cast("I")


def _thai_ngram_code(name: str) -> int:
    """The integer the scorers look the Thai trigram feature `name` up by."""
    if not all(ch == " " or 0 <= ord(ch) - THAI_BLOCK_START < RUN_EDGE for ch in name):
        raise ValueError(f"not a Thai trigram: {name!r}")
    edged = bytes(RUN_EDGE if ch == " " else ord(ch) - THAI_BLOCK_START for ch in name)
    return _ngram_codes(edged)[0]


def family_tables(names: Iterable[str]) -> tuple[tuple[dict[str, str], ...], dict[int, str]]:
    """A model's feature names split by family and keyed as `analyse` yields them.

    Returns (one dict per FAMILIES entry: key -> name, Thai trigram code -> name).  Words,
    leads and edges are keyed by the strings the analysis made (their hashes are computed for
    the cue look-up already), Thai trigrams by integers (see `_ngram_codes`).
    """
    named: dict[str, str] = {}   # bias, shape and cue names, all built at import
    marks: dict[str, str] = {}
    ngrams: dict[int, str] = {}
    by_prefix: dict[str, dict[str, str]] = {
        prefix: {} for prefix in (_EDGE_START, _EDGE_END, _WORD, _PREFIX, _LEAD)}
    for name in names:
        head = name[0]
        if len(name) == 1:
            marks[name] = name
        elif head in (_WORD, _PREFIX, _LEAD):
            by_prefix[head][name[1:]] = name
        elif name.startswith((_EDGE_START, _EDGE_END)):
            by_prefix[name[:2]][name[2:]] = name
        elif head < " ":
            named[name] = name
        elif len(name) == THAI_NGRAM_CHARS:
            ngrams[_thai_ngram_code(name)] = name
        else:
            raise ValueError(f"feature of no known family: {name!r}")
    tables = {"heads": by_prefix[_EDGE_START], "tails": by_prefix[_EDGE_END], "marks": marks,
              "cues": named, "words": by_prefix[_WORD], "prefixes": by_prefix[_PREFIX],
              "leads": by_prefix[_LEAD], "shape": named}
    return tuple(tables[family] for family in FAMILIES), ngrams


def ngram_codes(thai_runs: list[str]) -> memoryview:
    """The codes of the Thai trigrams `features` names for these runs, in order, plus one
    code per joint between runs that is in no table (see below)."""
    edge = _RUN_EDGE_CHAR
    # Runs joined by one edge byte: a trigram across a joint has the edge byte in its middle,
    # which no real trigram has, so it is in no table.
    return _ngram_codes(_UTF16_LE(edge + edge.join(thai_runs) + edge)[0][::2])
