"""One chat, one agent job at a time; and each chat's agent session.

A chat's agent works in the chat's own workspace, so two jobs of one chat never run at once.
Messages that arrive while the chat's job runs wait in the chat's lane, in order; when the
job is answered they go to the agent together, as one next turn. Other chats are not held
up: a lane holds only its own chat's messages, and they take no agent slot while they wait.

The session (the tier of the chat's last agent job and when its agent replied) is what the
classifier needs to send a follow-up ("go ahead", "ต่อเลย") to the session's tier. It is kept
for the most recently active chats and read back from the database for the others, so it
survives a router restart.
"""

from __future__ import annotations

import time
from typing import Callable

from cachetools import LRUCache

from proto.frames import StoredMessage

from .classifier.conversation import Session

# (tier, when the agent replied, in seconds since the epoch) of a chat's last agent reply.
ReadSession = Callable[[str], "tuple[str, float] | None"]


class Held:
    """A message for the chat's agent, the clients to answer, and the classifier's intent."""

    __slots__ = ("message", "clients", "intent")

    def __init__(self, message: StoredMessage, clients: list[bytes], intent: str = "") -> None:
        self.message = message
        self.clients = clients
        self.intent = intent


class Lanes:
    def __init__(self, sessions_kept: int, read_session: ReadSession) -> None:
        # chat -> messages waiting behind its running job; a chat is busy while it has a lane.
        self.lanes: dict[str, list[Held]] = {}
        self.sessions: LRUCache[str, tuple[str, float] | None] = LRUCache(sessions_kept)
        self.read_session = read_session

    def busy(self, chat: str) -> bool:
        return chat in self.lanes

    def start(self, chat: str) -> None:
        """The chat's job goes to an agent now."""
        self.lanes[chat] = []

    def hold(self, held: Held) -> int:
        """Wait behind the chat's job; returns the message's place in its lane (1 = next)."""
        lane = self.lanes[held.message.chat]
        lane.append(held)
        return len(lane)

    def finish(self, chat: str) -> list[Held]:
        """The chat's job is answered: the messages that waited for it (then the chat is
        busy again with them), or none (then it is free)."""
        waiting = self.lanes.pop(chat, [])
        if waiting:
            self.lanes[chat] = []
        return waiting

    def held(self) -> int:
        return sum(len(lane) for lane in self.lanes.values())

    # -- sessions ------------------------------------------------------------------------
    def replied(self, chat: str, tier: str) -> None:
        self.sessions[chat] = (tier, time.time())

    def session(self, chat: str) -> Session | None:
        try:
            known = self.sessions[chat]
        except KeyError:
            known = self.sessions[chat] = self.read_session(chat)
        if known is None:
            return None
        tier, replied_at = known
        return Session(tier, max(0.0, time.time() - replied_at))
