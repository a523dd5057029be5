"""A message trace for the routing row: chats of labelled messages, with short follow-ups
("go ahead", "ต่อเลย") after the agent's answers, as people write them.

Sources, in a stated proportion: the held-out messages the classifier was never trained or
tuned on (tests/data/router_heldout.jsonl) and the development set it was tuned against
(../shared/data/router_dev.jsonl), drawn with replacement (the two hold 364 messages). The
tier shares are an assumption about a personal assistant's traffic: mostly greetings, thanks
and notes, fewer real tasks. A follow-up's label is the tier of the agent job it continues
(that is what the user wants more of).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = {"held-out": (REPO / "tests" / "data" / "router_heldout.jsonl", 3),
           "dev": (REPO.parent / "shared" / "data" / "router_dev.jsonl", 1)}  # name: (file, weight)
MIX = {"inline": 0.45, "oracle-only": 0.27, "container-light": 0.16, "container-full": 0.12}
AGENT_TIERS = ("container-light", "container-full")
CHAT_LENGTH = 20          # messages per chat
FOLLOW_UP_SHARE = 0.35    # of agent answers that the user follows with "go ahead" and the like
FOLLOW_UPS = ("go ahead", "ok do it", "yes please", "continue", "sure, go on", "do that",
              "ต่อเลย", "ทำต่อ", "จัดไป", "เอาเลยครับ", "ได้เลยค่ะ", "ลุยเลย")


@dataclass(frozen=True)
class Message:
    chat: str
    text: str
    tier: str       # the label
    source: str     # held-out, dev or follow-up


def _examples() -> dict[str, dict[str, list[str]]]:
    """source -> tier -> texts."""
    out: dict[str, dict[str, list[str]]] = {}
    for name, (path, _) in SOURCES.items():
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out.setdefault(name, {}).setdefault(row["tier"], []).append(row["text"])
    return out


def build(count: int, seed: int) -> list[list[Message]]:
    """`count` messages in chats of CHAT_LENGTH, each chat a list in the order it is sent."""
    rng = random.Random(seed)
    examples = _examples()
    names = list(examples)
    weights = [SOURCES[name][1] for name in names]
    chats: list[list[Message]] = []
    made = 0
    while made < count:
        chat = f"bench-route-{len(chats)}"
        messages: list[Message] = []
        for _ in range(min(CHAT_LENGTH, count - made)):
            last = messages[-1] if messages else None
            if last is not None and last.tier in AGENT_TIERS and rng.random() < FOLLOW_UP_SHARE:
                messages.append(Message(chat, rng.choice(FOLLOW_UPS), last.tier, "follow-up"))
            else:
                source = rng.choices(names, weights=weights)[0]
                tier = rng.choices(list(MIX), weights=list(MIX.values()))[0]
                messages.append(Message(chat, rng.choice(examples[source][tier]), tier, source))
        chats.append(messages)
        made += len(messages)
    return chats


def describe() -> str:
    found = _examples()
    return ("sources " + " : ".join(f"{name} {SOURCES[name][1]}" for name in found)
            + " (by weight, drawn with replacement); tier shares "
            + ", ".join(f"{tier} {share:.0%}" for tier, share in MIX.items())
            + f"; chats of {CHAT_LENGTH}; {FOLLOW_UP_SHARE:.0%} of agent answers followed by a "
            "short follow-up (EN/TH), labelled with the tier it continues")
