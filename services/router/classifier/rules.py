"""High-precision structural rules that run before (or instead of) the statistical model.

Each rule looks at the shape of a message, never at topic words: an empty message, a
`/command`, a fenced code block or a stack trace, a very long message, a message with no
letters at all (emoji, punctuation).  A second helper splits off a leading pleasantry
("hi! ...", "ขอบคุณค่ะ ...") so the model can judge the request that follows it.
"""
from __future__ import annotations

import re

from .verdict import FULL, INLINE, Verdict

# Light-tier transforms work on "a phrase or a line"; a message this long is document-sized
# context for the large model whatever it asks.  It also bounds the work spent on huge
# inputs, which never reach the model.
LONG_MESSAGE_CHARS = 300
RULE_CONFIDENCE = 1.0

# "/start", "/help@warmwire_bot", "/lang th" -- but not a path such as "/etc/hosts".
_COMMAND_RE = re.compile(r"^/([^\s/@]+)(@\w+)?(?:\s|$)")
# Single-segment absolute paths that look like commands but are directories.
_PATH_ROOTS = frozenset({"bin", "boot", "dev", "etc", "home", "lib", "mnt", "opt", "proc",
                         "root", "run", "srv", "sys", "tmp", "usr", "var"})
_FENCE = "```"
# Signatures of pasted error output from common runtimes.  The substrings gate the regex so
# ordinary messages skip it.
_TRACE_HINT_RE = re.compile(r'Traceback|Exception|panic: |goroutine |File "|\n')
_TRACE_RE = re.compile(
    r"Traceback \(most recent call last\)|Exception in thread|^\s+at [\w$.]+\(.*\)$"
    r"|^panic: |goroutine \d+ \[|\w+Error: .+\n\s+at |^\s+File \".+\", line \d+",
    re.MULTILINE)
# Only letters and digits count as words; Thai vowels and tone marks are combining marks.
_WORDISH_RE = re.compile(r"[^\W_]|[\u0e00-\u0e7f]")

# Emoji that stand for an intent when sent on their own.
_EMOJI_INTENT = (
    ("🙏💐🤝", "thanks"),
    ("👍👌✅✔☑🆗💯", "ack"),
    ("👋🙋🤗☀🌞", "greeting"),
    ("😴🌙💤", "farewell"),
)


def structural(text: str) -> Verdict | None:
    """A verdict decided by the message's shape, or None when the model should decide."""
    stripped = text.strip()
    if not stripped:
        return Verdict(INLINE, "empty message", RULE_CONFIDENCE, "empty")
    if stripped[0] == "/":
        match = _COMMAND_RE.match(stripped)
        if match and match.group(1).lower() not in _PATH_ROOTS:
            return Verdict(INLINE, f"command /{match.group(1)}", RULE_CONFIDENCE, "command")
    if len(stripped) > LONG_MESSAGE_CHARS:
        return Verdict(FULL, f"long message ({len(stripped)} chars)", RULE_CONFIDENCE, "long")
    if _FENCE in stripped:
        return Verdict(FULL, "code block", RULE_CONFIDENCE, "code")
    if _TRACE_HINT_RE.search(stripped) and _TRACE_RE.search(stripped):
        return Verdict(FULL, "stack trace", RULE_CONFIDENCE, "code")
    if _WORDISH_RE.search(stripped) is None:
        return Verdict(INLINE, "emoji or symbols only", RULE_CONFIDENCE, _symbol_intent(stripped))
    return None


def _symbol_intent(text: str) -> str:
    for chars, intent in _EMOJI_INTENT:
        if any(ch in text for ch in chars):
            return intent
    return "smalltalk"


# --- leading pleasantry --------------------------------------------------------------------

# English openers need punctuation, an emoji or a newline after them ("thanks! now ...");
# with only a space, "thanks a lot" or "ok thank you" would be cut in the wrong place.
_OPENER_EN = (r"(?:hi+|hello+|hey+|hiya|yo|howdy|greetings|good (?:morning|afternoon|evening)"
              r"|morning|thanks?(?: you)?(?: so much| a lot| very much)?|thx|ty|cheers"
              r"|ok(?:ay)?|alright|sure|cool|great|perfect|awesome|nice|got it|yes|yeah|yep)"
              r"(?: there| again| (?:bot|buddy|mate|warmwire))?")
_OPENER_EN_PATTERN = (
    rf"^\s*{_OPENER_EN}\s*(?:[!,.;:~\-–—]+|[\u2600-\u27bf\U0001f000-\U0001faff]+|\n)\s*")
# A bare greeting word followed by a longer request: "hi can you fix ...".
_GREETING_SPACE_PATTERN = r"^\s*(?:hi+|hello+|hey+|yo)\s+(?=\S+\s+\S+\s+\S)"
# Thai openers are often followed by nothing but a space (or nothing at all) before the
# request, so a space is enough once an optional politeness particle is consumed.
_PARTICLES_TH = r"(?:ครับผม|ครับ|คับ|ค่ะ|คะ|ค่า|นะ|จ้า|จ้ะ|จ๊ะ|น้า|ผม|มากๆ|มาก|เลย)*"
_OPENER_TH_PATTERN = (
    rf"^\s*(?:สวัสดี|หวัดดี|ดีจ้า|ดีครับ|ดีค่ะ|ขอบคุณ|ขอบใจ|แต๊งกิ้ว|โอเค|ได้เลย|อ๋อ|อ้อ)"
    rf"{_PARTICLES_TH}(?:[\s!,.~]+|[\u2600-\u27bf\U0001f000-\U0001faff]+)")
# The three as one regex, tried in that order (an alternation takes the first alternative
# that matches, as `or` would): one match call per opener instead of three.
_OPENER_RE = re.compile(
    f"(?i:{_OPENER_EN_PATTERN})|{_OPENER_TH_PATTERN}|(?i:{_GREETING_SPACE_PATTERN})")
# What is left must look like a request on its own before it replaces the whole message.
MIN_REMAINDER_CHARS = 6
# "hi! thanks, ..." has two openers; more than a few in a row is not a pleasantry any more.
MAX_OPENERS = 3


def split_opener(text: str) -> tuple[str, str] | None:
    """(opener, rest) when the message starts with a pleasantry and goes on; else None."""
    rest = text
    opener = ""
    for _ in range(MAX_OPENERS):
        match = _OPENER_RE.match(rest)
        if not match or match.end() == 0:
            break
        opener += match.group(0)
        rest = rest[match.end():]
    rest = rest.strip()
    if not opener or len(rest) < MIN_REMAINDER_CHARS or _WORDISH_RE.search(rest) is None:
        return None
    return opener.strip(), rest
