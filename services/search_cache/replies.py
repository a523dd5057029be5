"""The sentence a chat user gets back, in the language they wrote in (Thai or English)."""

from __future__ import annotations

from proto.frames import Hit

from .text import has_thai

ELLIPSIS = "…"

_WORDS = {
    False: {
        "found": "From your notes:", "recall": "Here is what I know:",
        "none": "I found nothing about that in your notes.",
        "recall_none": "I don't know anything about that yet.",
        "degraded": "(searched by text only: the meaning index is unavailable right now)",
        "learned": "Noted.", "learned_later": "Noted. (It will be searchable by meaning once the index is back.)",
        "error": "Sorry, that did not work:",
    },
    True: {
        "found": "จากโน้ตของคุณ:", "recall": "นี่คือสิ่งที่ฉันรู้:",
        "none": "ไม่พบเรื่องนี้ในโน้ตของคุณ",
        "recall_none": "ยังไม่มีข้อมูลเรื่องนี้",
        "degraded": "(ค้นจากข้อความเท่านั้น: ระบบค้นหาตามความหมายยังไม่พร้อม)",
        "learned": "จดไว้แล้ว", "learned_later": "จดไว้แล้ว (จะค้นหาตามความหมายได้เมื่อระบบดัชนีกลับมา)",
        "error": "ขออภัย ทำไม่สำเร็จ:",
    },
}


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + ELLIPSIS


def hits_reply(request_text: str, hits: list[Hit], degraded: bool, recall: bool, text_chars: int) -> str:
    """Each hit's text is shortened to text_chars in the reply (the hit itself keeps it all)."""
    words = _WORDS[has_thai(request_text)]
    if not hits:
        lines = [words["recall_none" if recall else "none"]]
    else:
        lines = [words["recall" if recall else "found"]]
        lines += [f"{number}. {_shorten(hit.text, text_chars)}" for number, hit in enumerate(hits, start=1)]
    if degraded:
        lines.append(words["degraded"])
    return "\n".join(lines)


def learned_reply(request_text: str, indexed: bool) -> str:
    return _WORDS[has_thai(request_text)]["learned" if indexed else "learned_later"]


def error_reply(request_text: str, error: str) -> str:
    return f"{_WORDS[has_thai(request_text)]['error']} {error}"
