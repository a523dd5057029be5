"""The router's answer for one message: a tier, a reason, and the intent inside the tier."""
from __future__ import annotations

from dataclasses import dataclass

INLINE = "inline"
ORACLE = "oracle-only"
LIGHT = "container-light"
FULL = "container-full"

# Ordered from cheapest to most expensive way to answer.
TIERS = (INLINE, ORACLE, LIGHT, FULL)

# Intents the model learns from the corpus, each owned by exactly one tier.
LEARNED_INTENTS = {
    "greeting": INLINE, "thanks": INLINE, "ack": INLINE, "farewell": INLINE, "smalltalk": INLINE,
    "search": ORACLE, "learn": ORACLE, "recall": ORACLE,
    "question": LIGHT, "transform": LIGHT, "chat": LIGHT,
    "code": FULL, "analysis": FULL, "plan": FULL, "action": FULL, "explain": FULL,
    "writing": FULL,
}
# Intents only the structural rules produce.
RULE_INTENTS = {"command": INLINE, "empty": INLINE, "long": FULL, "web": LIGHT}
INTENT_TIER = {**LEARNED_INTENTS, **RULE_INTENTS}

# Human-readable reason for a verdict the model made, keyed by intent.
INTENT_REASON = {
    "greeting": "greeting", "thanks": "thanks", "ack": "acknowledgement",
    "farewell": "farewell", "smalltalk": "small talk",
    "search": "search request", "learn": "note to remember", "recall": "recall from notes",
    "question": "short question", "transform": "small transform", "chat": "casual chat",
    "code": "code request", "analysis": "analysis request", "plan": "planning request",
    "action": "action on files or systems", "explain": "explanation request",
    "writing": "long-form writing",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Immutable classification result; `tier` is one of TIERS."""

    tier: str
    reason: str
    confidence: float | None
    intent: str

    def as_dict(self) -> dict:
        return {"tier": self.tier, "reason": self.reason,
                "confidence": self.confidence, "intent": self.intent}
