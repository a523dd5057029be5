"""The conversation around a message: follow-ups to an open agent session, and the web.

A message is classified on its own first. Two things then depend on more than its words:

- **Follow-ups.** After an agent answered (often with a question), "yes", "go ahead", "no, I
  meant the other one", "ต่อเลย", "ลองใหม่" mean "carry on": they go to the open session's tier
  instead of getting an inline "Got it." Without an open session they stay inline, and a
  clear new request in an open session ("thanks! what's the weather in Tokyo?", "remember
  that …") is routed on its own merits: only a short message made of follow-up words counts.
- **The web.** "search the web for …", "look it up online", "ค้นในเน็ต", "หาในกูเกิล" ask for
  the internet, not the user's notes: they go to an agent (which says it cannot browse when
  it has no web tool) rather than to the notes search.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from .verdict import LIGHT, ORACLE, Verdict

AGENT_TIERS = ("container-light", "container-full")
FOLLOW_UP_INTENT = "follow-up"
WEB_INTENT = "web"
# A follow-up is a short reply; anything longer is a request of its own.
FOLLOW_UP_MAX_CHARS = 60
RULE_CONFIDENCE = 1.0


class Session(NamedTuple):
    """A chat's agent session: the tier its last agent job ran in, and how many seconds ago
    that agent replied."""

    tier: str
    age_s: float


# --- follow-ups ----------------------------------------------------------------------------

# English: optional lead-ins ("ok", "yes", "no,", "please"), one follow-up phrase, optional
# tails ("please", "then", "thanks"). Choices and corrections may name what they mean
# ("I meant the blue one", "same for main.py"): the length cap keeps them short.
_LEAD_EN = r"(?:ok(?:ay)?|yes|yeah|yep|yup|sure|alright|please|pls|no|nope|nah|right|well|and|then|now|so|hmm+)"
_PHRASE_EN = (
    r"(?:yes|yeah|yep|yup|sure|ok(?:ay)?|please do|do it|do that|do so|go ahead|go for it|go on"
    r"|proceed|continue|carry on|keep going|sounds good|let'?s do (?:it|that)|let'?s go|make it so"
    r"|ship it|confirm(?:ed)?|approved?|try again|again|retry|one more time|once more|redo(?: it)?"
    r"|run it again|(?:i )?meant\b.*|i mean\b.*|not that(?: one)?|the other(?: one)?|that one"
    r"|this one|the (?:first|second|third|last|other) (?:one|option|way)|option \w+"
    r"|both(?: of them)?|neither|next|what else|and then|fix it|do the (?:same|rest)"
    r"|same (?:for|with)\b.*|the same|finish it|all of them)")
_TAIL_EN = r"(?:please|pls|then|thanks|thank you|now|too|as well)"
_FOLLOW_UP_EN_RE = re.compile(
    rf"^(?:{_LEAD_EN}[\s,!.]+)*{_PHRASE_EN}(?:[\s,!.]+{_TAIL_EN})*[\s!.?]*$", re.IGNORECASE)

# Thai has no spaces between words: a follow-up is a message made only of follow-up words and
# particles (spaces removed), with at least one follow-up word.
_CUES_TH = ("ต่อเลย", "ทำต่อ", "ไปต่อ", "ต่อ", "ลุยเลย", "ลุย", "จัดไป", "จัดเลย", "เอาเลย", "ได้เลย",
            "ตกลง", "ใช่แล้ว", "ไม่ใช่", "ใช่", "เอาอันนั้น", "เอาอันนี้", "เอาอันแรก", "เอาอันที่สอง",
            "เอาแบบนั้น", "เอาแบบนี้", "อันนั้น", "อันนี้", "อีกอัน", "แบบนั้น", "แก้ตามนั้น",
            "ทำตามนั้น", "ตามนั้น", "ลองใหม่", "ลองอีกที", "ลองอีกครั้ง", "อีกครั้ง", "อีกรอบ",
            "ทำเลย", "เริ่มเลย", "ถัดไป", "ทั้งสองอัน", "ทั้งคู่", "แก้เลย", "หมายถึง", "โอเค")
_PARTICLES_TH = ("ครับผม", "ครับ", "คับ", "ค่ะ", "คะ", "ค่า", "นะ", "จ้า", "จ้ะ", "เลย", "หน่อย",
                 "ด้วย", "ก็ได้", "แล้วกัน", "ละกัน", "ผม", "แหละ", "งั้น", "ก็", "ok", "okay",
                 "yes")


def _alternation(words: tuple[str, ...]) -> str:
    # Longest first: an alternation takes the first alternative that matches.
    return "|".join(map(re.escape, sorted(words, key=len, reverse=True)))


_FOLLOW_UP_TH_RE = re.compile(rf"^(?:{_alternation(_CUES_TH + _PARTICLES_TH)})+$", re.IGNORECASE)
_CUE_TH_RE = re.compile(_alternation(_CUES_TH))
_SPACES_AND_MARKS_RE = re.compile(r"[\s,!.?~…]+")
_THAI_RE = re.compile(r"[\u0e00-\u0e7f]")


def is_follow_up(text: str) -> bool:
    """Whether the message is a short "carry on / that one / again" in English or Thai."""
    stripped = text.strip()
    if not stripped or len(stripped) > FOLLOW_UP_MAX_CHARS:
        return False
    if _THAI_RE.search(stripped):
        squeezed = _SPACES_AND_MARKS_RE.sub("", stripped)
        return bool(_FOLLOW_UP_TH_RE.match(squeezed) and _CUE_TH_RE.search(squeezed))
    return bool(_FOLLOW_UP_EN_RE.match(stripped))


def in_session(text: str, verdict: Verdict, session: Session | None, window_s: float) -> Verdict:
    """The verdict for ``text`` given the chat's session: a follow-up within ``window_s`` of
    the agent's last reply goes to the session's tier; anything else keeps its own verdict.
    A request for the notes (oracle-only) is never taken for a follow-up."""
    if (session is None or session.tier not in AGENT_TIERS or session.age_s > window_s
            or verdict.tier == ORACLE or not is_follow_up(text)):
        return verdict
    return Verdict(session.tier, f"follow-up in an open {session.tier} session",
                   RULE_CONFIDENCE, FOLLOW_UP_INTENT)


# --- the web -------------------------------------------------------------------------------

_WEB_EN = (r"\b(?:search|look|find|google|browse|lookup)\b[^.?!\n]{0,40}?"
           r"(?<!\bis )(?<!\bare )(?<!\bbe )\b(?:the web|the internet|online|on google|the net|web search)\b"
           r"|\b(?:google|bing) (?:it|this|that|for)\b|\bweb search\b|\bbrowse the (?:web|internet)\b"
           r"|\blook (?:it|this|that) up\b(?! in my)")
_WEB_TH = r"(?:ค้น|หา|เสิร์ช|เช็ค|ดู)[^\s]{0,6}(?:ใน|จาก|บน)?(?:เน็ต|อินเทอร์เน็ต|อินเตอร์เน็ต|กูเกิล|google|ออนไลน์)"
_WEB_RE = re.compile(rf"{_WEB_EN}|{_WEB_TH}", re.IGNORECASE)
_NOTES_RE = re.compile(r"\b(?:my|the) notes?\b|โน้ต|บันทึก", re.IGNORECASE)


def web_request(text: str) -> Verdict | None:
    """A request to look something up on the internet, which the user's notes cannot answer."""
    if _WEB_RE.search(text) is None or _NOTES_RE.search(text) is not None:
        return None
    return Verdict(LIGHT, "web search (needs an agent: the notes are not the web)",
                   RULE_CONFIDENCE, WEB_INTENT)
