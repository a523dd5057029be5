"""Every frame warmwire sends, as msgspec Structs encoded as single-frame MessagePack maps.

Each frame is a map with a ``type`` field (msgspec tagged unions), so any MessagePack library
can speak it. Structs are ``gc=False`` (they never hold cycles) and fields left at their
default are omitted on the wire.

Three families, each decoded by its own union so a socket only accepts what belongs on it:
client frames (frontend), control frames (health and status), store frames (store-writer).
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec


class Frame(msgspec.Struct, tag_field="type", gc=False, omit_defaults=True, forbid_unknown_fields=False):
    pass


# --- client frames (the public wire protocol, documented in README.md) -------------------

Tier = Literal["inline", "oracle-only", "container-light", "container-full"]


class Chat(Frame, tag="chat"):
    """A user's message. ``id`` is unique per message; a resent id is answered from storage."""

    id: str
    chat: str
    sender: str
    text: str


class Reply(Frame, tag="reply"):
    """The answer to a message."""

    id: str
    chat: str
    tier: Tier
    text: str


NoticeKind = Literal["queued", "busy", "error", "unavailable", "progress"]


class Notice(Frame, tag="notice"):
    """Anything that is not the answer: queued, busy, error, a tier not available, progress."""

    id: str
    kind: NoticeKind
    text: str
    chat: str = ""
    retry_after: float | None = None
    position: int | None = None


ClientIn = Chat
ClientOut = Union[Reply, Notice]


# --- control frames: supervisor <-> services, CLI <-> supervisor ---------------------------

class Probe(Frame, tag="probe"):
    seq: int


class Health(Frame, tag="health"):
    """A service's answer to a probe; ``stats`` is shown by ``warmwire status``."""

    seq: int
    name: str
    pid: int
    state: str
    stats: dict[str, Any] = {}


class StatusRequest(Frame, tag="status?"):
    pass


class ServiceStatus(msgspec.Struct, gc=False):
    name: str
    pid: int | None
    state: str
    restarts: int
    uptime: float | None
    last_probe_age: float | None
    stats: dict[str, Any]


class Status(Frame, tag="status"):
    services: list[ServiceStatus]
    supervisor: dict[str, Any]


Control = Union[Probe, Health, StatusRequest, Status]


# --- store frames: writers -> store-writer, and its acknowledgements ----------------------

class StoredMessage(msgspec.Struct, gc=False, omit_defaults=True):
    id: str
    chat: str
    sender: str
    text: str
    tier: str
    received_at: float
    status: str = "answered"


class SaveExchange(Frame, tag="save-exchange"):
    """A message and the answer it got, committed together so neither exists alone."""

    message: StoredMessage
    answer: Union[Reply, Notice, None] = None


class Committed(Frame, tag="committed"):
    """The store-writer committed these keys (message ids); the sender may forget them."""

    keys: list[str]


class StoreError(Frame, tag="store-error"):
    """The store-writer could not commit these keys; they stay pending at the sender."""

    keys: list[str]
    error: str


StoreIn = SaveExchange
StoreOut = Union[Committed, StoreError]


class Codec:
    """One encoder and one decoder per frame family, made once per process and reused."""

    def __init__(self, frames: Any) -> None:
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(frames)

    def encode(self, frame: msgspec.Struct) -> bytes:
        return self.encoder.encode(frame)

    def decode(self, data: bytes | memoryview) -> Any:
        return self.decoder.decode(data)


def describe_decode_error(data: bytes | memoryview, error: msgspec.DecodeError) -> tuple[str, str]:
    """(message id if one can be read, a user-facing reason) for a frame that failed to decode."""
    try:
        loose = msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return "", "frame is not valid MessagePack"
    if not isinstance(loose, dict):
        return "", "frame must be a MessagePack map with a 'type' field"
    frame_id = loose.get("id") if isinstance(loose.get("id"), str) else ""
    frame_type = loose.get("type")
    if frame_type is None:
        return frame_id, "frame has no 'type' field"
    if frame_type != "chat":
        return frame_id, f"unknown frame type {frame_type!r}; clients send type 'chat'"
    return frame_id, f"invalid chat frame: {error}"
