"""The inline tier: greetings, thanks, acknowledgements, small talk and /commands.

Answers come from templates in the user's language (Thai when the message has Thai letters),
so they cost no model and take microseconds.
"""

from __future__ import annotations

from typing import Any, Callable

THAI_FIRST, THAI_LAST = "\u0e00", "\u0e7f"

TEMPLATES = {
    "en": {
        "greeting": "Hello! What can I do for you?",
        "thanks": "You're welcome!",
        "ack": "Got it.",
        "farewell": "Goodbye, talk soon!",
        "smalltalk": "I'm doing well, thanks for asking. What can I do for you?",
        "empty": "Your message was empty. Write something, or send /help.",
    },
    "th": {
        "greeting": "สวัสดีครับ มีอะไรให้ช่วยไหมครับ",
        "thanks": "ยินดีครับ",
        "ack": "รับทราบครับ",
        "farewell": "แล้วคุยกันใหม่นะครับ",
        "smalltalk": "สบายดีครับ ขอบคุณที่ถามนะครับ มีอะไรให้ช่วยไหมครับ",
        "empty": "ข้อความว่างเปล่าครับ พิมพ์ข้อความ หรือส่ง /help",
    },
}

HELP = {
    "en": (
        "warmwire answers greetings and commands at once, searches and stores your notes, and "
        "runs an agent for everything else.\n"
        "Commands: /help this text; /status what this router has done since it started; "
        "/cost what agents cost today; /ping check that warmwire answers."
    ),
    "th": (
        "warmwire ตอบคำทักทายและคำสั่งได้ทันที ค้นหาและจดบันทึกของคุณ "
        "และส่งงานอื่นให้เอเจนต์\n"
        "คำสั่ง: /help ข้อความนี้; /status สถานะของเราเตอร์; /cost ค่าใช้จ่ายของเอเจนต์วันนี้; "
        "/ping ตรวจว่า warmwire ตอบ"
    ),
}


def language(text: str) -> str:
    """'th' when the text has any Thai letter, else 'en'."""
    return "th" if any(THAI_FIRST <= ch <= THAI_LAST for ch in text) else "en"


class InlineResponder:
    """Turns an inline-tier message into its answer text."""

    def __init__(self, status: Callable[[], dict[str, Any]],
                 spend_today: Callable[[], tuple[int, int, float]],
                 unpriced_today: Callable[[], dict[str, int]] = dict) -> None:
        """unpriced_today: today's tokens of each model with no price (their cost is unknown:
        /cost says so instead of counting them as $0)."""
        self.status = status
        self.spend_today = spend_today
        self.unpriced_today = unpriced_today
        self.commands = {"/help": self._help, "/start": self._help, "/status": self._status,
                         "/cost": self._cost, "/ping": lambda lang: "pong"}

    def respond(self, intent: str, text: str) -> str:
        lang = language(text)
        if intent == "command":
            name = text.strip().split(maxsplit=1)[0].lower().split("@", 1)[0]
            command = self.commands.get(name)
            if command is None:
                return f"Unknown command {name}. Send /help for the list."
            return command(lang)
        return TEMPLATES[lang].get(intent, TEMPLATES[lang]["ack"])

    def _help(self, lang: str) -> str:
        return HELP[lang]

    def _cost(self, lang: str) -> str:
        jobs, tokens, cost = self.spend_today()
        unpriced = self.unpriced_today()
        if lang == "th":
            line = f"วันนี้: งานเอเจนต์ {jobs} งาน, {tokens} โทเค็น, ${cost:.4f}"
            if unpriced:
                line += (f" (ไม่รวม {sum(unpriced.values())} โทเค็นของโมเดลที่ไม่มีราคา: "
                         f"{', '.join(sorted(unpriced))})")
            return line
        line = f"today: {jobs} agent jobs, {tokens} tokens, ${cost:.4f}"
        if unpriced:
            line += (f" (not counting {sum(unpriced.values())} tokens of models with no price, "
                     f"whose cost is unknown: {', '.join(sorted(unpriced))})")
        return line

    def _status(self, lang: str) -> str:
        stats = self.status()
        tiers = ", ".join(f"{tier} {count}" for tier, count in stats["tiers"].items())
        return (f"router up {stats['uptime']:.0f} s; messages {stats['messages']} "
                f"({tiers}); waiting for storage {stats['pending_writes']}")
