"""Text handling for Thai and English notes: normalising, command words, full-text terms,
chunks for the embedding model.

Thai has no spaces between words and its vowel and tone marks are combining characters
(Unicode category Mn), so nothing here relies on regex ``\\w``/``\\b`` or on splitting at
spaces alone: words are runs of characters that are not punctuation, symbols or spaces, and
Thai is searched by character trigrams.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

THAI_LETTER = re.compile("[\u0e00-\u0e7f]")
SPACES = re.compile(r"\s+")
# Unicode categories that separate words: punctuation, symbols, separators, controls.
SEPARATOR_CATEGORIES = frozenset("PSZC")
# The trigram tokenizer indexes every run of this many characters.
TRIGRAM = 3
# Frequent English words that would match nearly every note in a full-text OR query.
STOPWORDS = frozenset(
    "the and for are was were what who which when where why how you your with about from that "
    "this these those have has had did does not but can could would should will all any some "
    "into there their they them its it's i'm know tell say said again".split()
)
ID_CHARS = 32

# Command words a chat user puts before a note or a query ("remember that …"). Longest first
# within each language, so "จำไว้ว่า" is taken whole and not as "จำไว้" + "ว่า".
_ENGLISH_COMMANDS = {
    "learn": r"(?:please |can you |could you )?(?:remember|memori[sz]e|note(?: this)?(?: down)?|"
             r"take a note|make a note|save(?: this| a note)?|store(?: this)?|keep(?: this)?|"
             r"write down|jot(?: this)? down|add(?: this)? to (?:my )?(?:notes|knowledge base)|"
             r"add a note|log|record|don't forget|for future reference|fyi|just so you know)"
             r"(?: that| this| ?ไว้ว่า| ?ว่า| ?ไว้)?\s*[:\-–,]?\s*",
    "search": r"(?:please )?(?:search|find|look ?up|look (?:in|through)|pull up|show me)"
              r"(?: (?:my|the))?(?: (?:notes|knowledge base|stuff|everything|anything))?"
              r"(?: (?:for|on|about))?\s*[:\-–,]?\s*",
    "recall": r"(?:what (?:do|did) (?:you|i) (?:know|say|tell you|note|save|write)|"
              r"what have (?:i|we) (?:told you|noted|saved|got)|what do you (?:have|remember)|"
              r"tell me what you (?:know|remember)|do you remember|recall|remind me(?: what)?)"
              r"(?: about| on| of| regarding)?\s*[:\-–,]?\s*",
}
_THAI_COMMANDS = {
    "learn": ["ช่วยจำไว้หน่อยว่า", "ช่วยบันทึกว่า", "ช่วยจำว่า", "ช่วยจดว่า", "จำไว้ด้วยว่า",
              "จำไว้นะว่า", "จำไว้ว่า", "จดไว้ว่า", "บันทึกไว้ว่า", "บันทึกว่า", "โน้ตไว้ว่า",
              "เซฟไว้ว่า", "เก็บไว้ว่า", "ขอให้จำว่า", "อย่าลืมว่า", "จดโน้ตว่า", "เพิ่มในโน้ตว่า",
              "เพิ่มโน้ต", "บันทึกโน้ต", "เตือนความจำ", "จดไว้หน่อย", "จำไว้นะ", "จำไว้", "จดไว้",
              "บันทึก", "โน้ต", "จดว่า"],
    "search": ["ค้นหาโน้ตเรื่อง", "ค้นหาเรื่อง", "ค้นหา", "หาโน้ตเรื่อง", "หาโน้ต", "ช่วยหา", "ค้น", "หา"],
    "recall": ["รู้อะไรเกี่ยวกับ", "รู้อะไรเรื่อง", "จำได้ไหมว่า", "จำได้มั้ยว่า", "ยังจำได้ไหม",
               "จำได้ไหม", "ฉันเคยบอกไว้ว่า", "ฉันเคยบอกเรื่อง", "เคยบอกเรื่อง"],
}
_COMMAND_PATTERNS = {
    intent: re.compile(
        "^(?:" + english + "|(?:" + "|".join(map(re.escape, _THAI_COMMANDS[intent])) + r")\s*[:\-–,]?\s*)",
        re.IGNORECASE,
    )
    for intent, english in _ENGLISH_COMMANDS.items()
}
# Thai polite particles and question endings that carry nothing to search for.
_THAI_ENDINGS = re.compile(r"(?:บ้าง|ไหม|มั้ย|หน่อย|นะ|ครับ|ค่ะ|คะ|จ้ะ|จ้า)+\s*[?？]*$")


def normalize(text: str) -> str:
    """NFC, one space for any run of whitespace, no leading or trailing space."""
    return SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


def cache_text(query: str) -> str:
    """The form two queries share when they should hit the same cache entry."""
    return normalize(query).casefold()


def has_thai(text: str) -> bool:
    return THAI_LETTER.search(text) is not None


def note_id(source: str, text: str) -> str:
    """Derived from source and content: the same note saved twice is one note."""
    return hashlib.sha256(f"{source}\x00{text}".encode()).hexdigest()[:ID_CHARS]


def strip_command(intent: str, message: str) -> str:
    """A chat message without the command words in front ("remember that", "จำไว้ว่า")."""
    text = normalize(message)
    pattern = _COMMAND_PATTERNS.get(intent)
    if pattern is not None:
        text = pattern.sub("", text, count=1)
    if intent != "learn":
        text = _THAI_ENDINGS.sub("", text.rstrip("?？ ")).strip()
    return text


def _is_separator(char: str) -> bool:
    return unicodedata.category(char)[0] in SEPARATOR_CATEGORIES


def words(text: str) -> list[str]:
    """Runs of characters that are not punctuation, symbols or spaces (Thai marks included)."""
    found, current = [], []
    for char in text:
        if _is_separator(char):
            if current:
                found.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        found.append("".join(current))
    return found


def quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _thai_trigrams(run: str) -> list[str]:
    """Trigrams that tile a Thai run (non-overlapping, the last one flush with its end):
    a note holding the run holds them all, and overlapping ones would only repeat each other."""
    starts = list(range(0, len(run) - TRIGRAM + 1, TRIGRAM))
    if starts[-1] != len(run) - TRIGRAM:
        starts.append(len(run) - TRIGRAM)
    return [run[start:start + TRIGRAM] for start in starts]


def fts_terms(query: str, max_terms: int) -> list[str]:
    """Terms for a full-text OR query. English words are matched whole (as substrings);
    a Thai run (often a whole phrase) becomes trigrams that tile it, so a note that shares
    part of the phrase matches and bm25 ranks the one sharing most of it first."""
    terms: dict[str, None] = {}
    for word in words(query.casefold()):
        if len(word) < TRIGRAM:
            continue
        if has_thai(word):
            terms.update(dict.fromkeys(_thai_trigrams(word)))
        elif word not in STOPWORDS:
            terms[word] = None
        if len(terms) >= max_terms:
            break
    return list(terms)[:max_terms]


def share_of_terms(terms: list[str], text: str) -> float:
    """The share of the query's terms that a note's text contains (1 when there are none)."""
    if not terms:
        return 1.0
    folded = text.casefold()
    return sum(term in folded for term in terms) / len(terms)


def fts_match(terms: list[str]) -> str:
    """An FTS5 expression: any of the terms, each quoted so no character is an operator."""
    return " OR ".join(quote(term) for term in terms)


def short_needle(query: str) -> str:
    """For a query with no term the trigram index can match: the longest word, to scan for."""
    found = words(query)
    return max(found, key=len) if found else ""


# --- chunks for the embedding model -------------------------------------------------------

# Sentence ends: . ! ? (and full-width forms) followed by a space, or a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")
# Thai writes a space between sentences and clauses, not between words: a space with Thai
# on both sides is a sentence-ish boundary.
_THAI_BREAK = re.compile(r"(?<=[\u0e00-\u0e7f])\s+(?=[\u0e00-\u0e7f])")


def sentences(text: str) -> list[str]:
    pieces = []
    for line in _SENTENCE_END.split(unicodedata.normalize("NFC", text)):
        pieces.extend(part.strip() for part in _THAI_BREAK.split(line))
    return [piece for piece in pieces if piece]


def _cut(piece: str, limit: int) -> list[str]:
    """A piece longer than limit, cut at the last space before it, or (Thai without spaces)
    at a character that is not a combining mark, so no vowel is split from its consonant."""
    parts = []
    while len(piece) > limit:
        at = piece.rfind(" ", 0, limit + 1)
        if at <= 0:
            at = limit
            while at > 1 and unicodedata.category(piece[at]) == "Mn":
                at -= 1
        parts.append(piece[:at].strip())
        piece = piece[at:].strip()
    if piece:
        parts.append(piece)
    return parts


def chunks(text: str, max_chars: int, max_sentences: int) -> list[str]:
    """A note as chunks of at most max_sentences sentences and max_chars characters."""
    result: list[str] = []
    current: list[str] = []
    size = 0
    for sentence in sentences(text):
        for piece in _cut(sentence, max_chars):
            if current and (len(current) >= max_sentences or size + 1 + len(piece) > max_chars):
                result.append(" ".join(current))
                current, size = [], 0
            current.append(piece)
            size += len(piece) + (1 if size else 0)
    if current:
        result.append(" ".join(current))
    return result
