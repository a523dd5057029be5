"""Every frame warmwire sends, as msgspec Structs encoded as single-frame MessagePack maps.

Each frame is a map with a ``type`` field (msgspec tagged unions), so any MessagePack library
can speak it. Structs are ``gc=False`` (they never hold cycles) and fields left at their
default are omitted on the wire.

Four families, each decoded by its own union so a socket only accepts what belongs on it:
client frames (frontend), control frames (health and status), store frames (store-writer),
knowledge frames (search-cache).
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


NoticeKind = Literal["queued", "busy", "error", "unavailable", "progress", "delta"]


class Notice(Frame, tag="notice"):
    """Anything that is not the answer: queued, busy, error, a tier not available, progress,
    and ``delta``: a piece of a model's answer as it streams (the final ``reply`` still
    carries the whole text; a delta is never stored)."""

    id: str
    kind: NoticeKind
    text: str
    chat: str = ""
    retry_after: float | None = None
    position: int | None = None


# What a client may ask besides sending a message: a chat's earlier messages, and its notes
# (learn one, search them). None of them is a chat message: nothing is classified or stored
# as a message, and each is answered by one frame carrying its ``id`` (or an error notice).

class HistoryRequest(Frame, tag="history"):
    """A page of a chat's stored messages, oldest first: the ``limit`` (0 = the default, at
    most ``router.history_max_limit``) messages just before message ``before`` ("" = the
    newest)."""

    id: str
    chat: str
    before: str = ""
    limit: int = 0


class LearnNote(Frame, tag="learn"):
    """Remember a note (at most ``search.max_note_chars`` characters; split a file first).
    ``part``/``parts``: the note is the part-th of a file's ``parts`` pieces, and replaces what
    was at that place when ``source`` is learned again."""

    id: str
    text: str
    source: str = "client"
    tags: list[str] = []
    part: int | None = None
    parts: int | None = None


class SearchNotes(Frame, tag="search"):
    """Find notes; answered with ranked passages and their sources (``Found``)."""

    id: str
    query: str
    mode: SearchMode = "hybrid"
    limit: int = 0


class HistoryMessage(msgspec.Struct, gc=False):
    id: str
    sender: str
    text: str
    tier: str
    status: str
    received_at: float
    answers: list[Union[Reply, Notice]] = []


class History(Frame, tag="history", omit_defaults=False):
    """The answer to a ``HistoryRequest``: messages oldest first, each with the answers it got
    (the same ``reply`` and ``notice`` frames a client gets live); ``more``: older ones exist
    (ask again with ``before`` = the first message's id)."""

    id: str
    chat: str
    messages: list[HistoryMessage] = []
    more: bool = False


class Learned(Frame, tag="learned", omit_defaults=False):
    """The note of a ``LearnNote`` is stored under ``note``. ``indexed`` False: findable by
    full text now, by meaning once the vector index is back."""

    id: str
    note: str
    indexed: bool = False


class Found(Frame, tag="found", omit_defaults=False):
    """The answer to a ``SearchNotes``: hits, best first (``score``'s scale depends on the
    mode). ``degraded``: the vector index was down, so these come from full text alone."""

    id: str
    hits: list[Hit] = []
    degraded: bool = False


# What the router decodes. In a tagged Union ``type`` is required (msgspec takes the tag of a
# lone tagged Struct as optional), so a map without ``type`` is refused, as the wire protocol says.
ClientIn = Union[Chat, HistoryRequest, LearnNote, SearchNotes]
ClientOut = Union[Reply, Notice, History, Learned, Found]


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
    """A message and the answer it got, committed together so neither exists alone.
    With no answer yet (a job to run), the message alone."""

    message: StoredMessage
    answer: Union[Reply, Notice, None] = None

    @property
    def key(self) -> str:
        return self.message.id


class SaveAnswer(Frame, tag="save-answer"):
    """A later answer to a stored message (an agent's reply, a refusal) and its new status."""

    message_id: str
    seq: int
    status: str
    answer: Union[Reply, Notice]
    # What the agent's tools did for this answer (bounded, one line a call), kept for history.
    tools: str = ""

    @property
    def key(self) -> str:
        return f"{self.message_id}#{self.seq}"


class SaveJob(Frame, tag="save-job"):
    """A job's state change (accepted, running, done, failed), with the container it ran in."""

    id: str
    message_id: str
    chat: str
    tier: str
    state: str
    container: str = ""

    @property
    def key(self) -> str:
        return f"job:{self.id}:{self.state}"


class SaveUsage(Frame, tag="save-usage"):
    """Tokens and estimated cost of one job (one row per job)."""

    job_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None: the model has no price (its cost is unknown, not $0)

    @property
    def key(self) -> str:
        return f"usage:{self.job_id}"


class Committed(Frame, tag="committed"):
    """The store-writer committed these keys (message ids); the sender may forget them.
    ``stored_before``: those of the keys whose ``SaveExchange`` changed nothing because another
    message had been stored under its id before (a client's resend, or an id reused); the
    same write arriving twice is not one of them."""

    keys: list[str]
    stored_before: list[str] = []


class StoreError(Frame, tag="store-error"):
    """The store-writer could not commit these keys. ``unavailable``: no write can succeed
    right now (``error`` says why: a full disk, a read-only folder); the same write may
    succeed later."""

    keys: list[str]
    error: str
    unavailable: bool = False


class StoredNote(msgspec.Struct, gc=False, omit_defaults=True):
    """One note of the knowledge base. ``id`` is derived from source and text, so saving the
    same note again changes nothing. A note with a ``part`` is the part-th piece of a file:
    it supersedes the note that was at that place before, and ``parts`` (the file's piece
    count) supersedes the pieces a shorter version no longer has."""

    id: str
    text: str
    source: str
    created_at: float
    tags: list[str] = []
    chat: str = ""
    part: int | None = None
    parts: int | None = None


class SaveNote(Frame, tag="save-note"):
    """A note for the knowledge base; acknowledged by ``Committed`` with the note's id."""

    note: StoredNote

    @property
    def key(self) -> str:
        return self.note.id


# Every store frame has a ``key``: what ``Committed`` names, and what makes it idempotent.
StoreIn = Union[SaveExchange, SaveAnswer, SaveJob, SaveUsage, SaveNote]
StoreOut = Union[Committed, StoreError]


# --- knowledge frames: router and CLI -> search-cache, and its answers --------------------
#
# Every request carries ``req``, an id the sender picks; the answer repeats it. With
# ``message=True`` the text is a chat message as the user typed it, and the search-cache
# takes the command words off it first ("remember that …", "search my notes for …",
# "จำไว้ว่า …", "what do you know about …"). Every answer has a ``reply``: a sentence for a
# chat user, in the language of the request, that the router can send as it is.

SearchMode = Literal["fts", "vector", "hybrid"]


class SearchFilters(msgspec.Struct, gc=False, omit_defaults=True, frozen=True):
    """Narrow a search: notes whose source starts with ``source``, that carry every tag in
    ``tags``, learned in ``chat``. Empty means no condition."""

    source: str = ""
    tags: tuple[str, ...] = ()
    chat: str = ""


class SearchRequest(Frame, tag="search"):
    """Find notes: ``fts`` (full text, works on Thai substrings), ``vector`` (meaning, across
    languages) or ``hybrid`` (both, fused by reciprocal rank). ``limit`` 0 = the default."""

    req: str
    query: str
    mode: SearchMode = "hybrid"
    limit: int = 0
    filters: SearchFilters = SearchFilters()
    message: bool = False


class LearnRequest(Frame, tag="learn"):
    """Remember a note. Answered once the store-writer committed it (``LearnAnswer``)."""

    req: str
    text: str
    source: str = "chat"
    tags: list[str] = []
    chat: str = ""
    part: int | None = None
    parts: int | None = None
    message: bool = False


class RecallRequest(Frame, tag="recall"):
    """"What do you know about …": the notes about ``topic``, or the latest notes without
    one. Answered with a ``SearchAnswer``."""

    req: str
    topic: str = ""
    chat: str = ""
    limit: int = 0
    message: bool = False


class Hit(msgspec.Struct, gc=False, omit_defaults=True):
    """A note found: ``score`` orders hits within one answer (higher is better); its scale
    depends on the mode (bm25, cosine similarity, or fused reciprocal rank)."""

    id: str
    text: str
    source: str
    score: float


class SearchAnswer(Frame, tag="search-answer"):
    """Hits, best first. ``degraded``: the vector index was unreachable, so these come from
    full text alone. ``error``: the request could not be served (bad input says why)."""

    req: str
    hits: list[Hit] = []
    degraded: bool = False
    error: str = ""
    reply: str = ""


class LearnAnswer(Frame, tag="learn-answer"):
    """The note is stored under ``id``. ``indexed`` False: the vector index was down; the
    note is findable by full text now and by meaning once the index catches up."""

    req: str
    id: str = ""
    indexed: bool = False
    error: str = ""
    reply: str = ""


KnowledgeIn = Union[SearchRequest, LearnRequest, RecallRequest]
KnowledgeOut = Union[SearchAnswer, LearnAnswer]
# The classifier's oracle-only intents and the request each becomes.
KNOWLEDGE_INTENTS = ("search", "learn", "recall")


def knowledge_request(intent: str, req: str, chat: str, text: str) -> SearchRequest | LearnRequest | RecallRequest:
    """The frame to send to the search-cache for an oracle-only chat message."""
    if intent == "learn":
        return LearnRequest(req=req, text=text, chat=chat, message=True)
    if intent == "recall":
        return RecallRequest(req=req, topic=text, chat=chat, message=True)
    return SearchRequest(req=req, query=text, message=True)


# --- job frames: router -> pool-manager, and what comes back -------------------------------

class Turn(msgspec.Struct, gc=False, omit_defaults=True):
    """One earlier turn of the chat, for the agent's context. ``tools``: what the agent's
    tools did in an assistant turn (bounded, one line a call)."""

    role: Literal["user", "assistant"]
    content: str
    tools: str = ""


class Passage(msgspec.Struct, gc=False, omit_defaults=True):
    """A knowledge passage the agent may answer from."""

    text: str
    source: str = ""


class Job(Frame, tag="job"):
    """Run an agent for one message. ``id`` is the message id: one job per message, so a job
    sent twice (after a pool-manager restart) is recognised."""

    id: str
    chat: str
    tier: Tier
    model: str
    text: str
    history: list[Turn] = []
    context: list[Passage] = []
    # Later messages of the chat that waited for its previous job and are answered together
    # with ``id`` as one turn (``text`` holds them all, in order); each gets the reply.
    merged: list[str] = []
    # The classifier's intent ("web": the user asked for the internet, which no tool reaches).
    intent: str = ""


class JobProgress(Frame, tag="job-progress"):
    """The agent is working; ``text`` says on what. ``slots``: see JobResult."""

    id: str
    chat: str
    text: str
    slots: int = 0


class JobResult(Frame, tag="job-result"):
    """The agent's answer, or ``error`` when there is none. ``agent`` names who answered
    ("offline" for the built-in offline agent, else the provider)."""

    id: str
    chat: str
    text: str = ""
    error: str = ""
    agent: str = ""
    model: str = ""
    container: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    # When the agent wrote its result file, the pool-manager read it and sent this frame
    # (seconds since the epoch; the agent's container shares the host's clock): the router
    # measures the path from that file to the reply leaving it, stage by stage.
    written_at: float = 0.0
    read_at: float = 0.0
    sent_at: float = 0.0
    # The pool-manager's concurrency limit now: the router sends no more jobs than this
    # before answers come back, so the kernel's socket buffers cannot hide a queue.
    slots: int = 0
    # "budget": no answer because today's model budget is spent (``error`` says so for the
    # user, ``retry_after`` is the time until the budget renews). "" for any other result.
    refused: str = ""
    retry_after: float | None = None
    # What the agent's tools did (bounded, one line a call): stored with the reply.
    tools: str = ""


class JobDelta(Frame, tag="job-delta"):
    """A piece of the model's answer to job ``id``, as it streams: from the model gateway
    straight to the router (endpoints.deltas), sent on as a ``delta`` notice, never stored.
    It skips the pool-manager: the agent needs the finished turn, the user its text now."""

    id: str
    chat: str
    text: str


PoolIn = Job
class Slots(Frame, tag="slots"):
    """The pool-manager's concurrency limit changed (every frame above carries it too; this
    one tells a router that has nothing else coming, e.g. while its jobs wait on a model)."""

    slots: int


PoolOut = Union[JobProgress, JobResult, Slots]


# --- model frames: pool-manager <-> model gateway ------------------------------------------
#
# One model turn, provider-neutral: the gateway turns it into an Anthropic Messages or an
# OpenAI-compatible chat completion request, streams the answer, and gives back the finished
# turn. Tools and tool calls are carried already, so an agent's tool loop needs no new frame.

class ToolSpec(msgspec.Struct, gc=False, omit_defaults=True):
    """A tool the model may call: ``parameters`` is a JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = {}


class ToolCall(msgspec.Struct, gc=False, omit_defaults=True):
    """The model asks for a tool to be run; ``id`` ties the result to the call."""

    id: str
    name: str
    arguments: dict[str, Any] = {}


class ModelMessage(msgspec.Struct, gc=False, omit_defaults=True):
    """One message of the conversation a turn continues. ``tool``: the result of the call
    ``tool_call_id`` (``content`` is its output)."""

    role: Literal["user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = []
    tool_call_id: str = ""


class TurnRequest(Frame, tag="turn-request"):
    """Ask the model for one turn. ``req`` is unique per turn (the answer repeats it);
    ``job`` and ``chat`` say whose it is (usage is recorded per job, deltas reach its
    client); the model, its limits and the provider come from the gateway's settings for
    ``tier``."""

    req: str
    job: str
    chat: str
    tier: Tier
    system: str = ""
    messages: list[ModelMessage] = []
    tools: list[ToolSpec] = []
    stream: bool = True
    # Milliseconds the agent spent running the previous turn's tool calls (the gateway's
    # tool_step figure leaves them out: it is the path's own cost).
    tool_ms: float = 0.0


TurnError = Literal["", "budget", "provider", "config", "busy"]


class TurnResult(Frame, tag="turn-result"):
    """The finished turn: its whole text, any tool calls, the provider's own token counts.
    ``error``: why there is none (``error_kind`` "budget": today's budget is spent and no
    provider call was made; ``retry_after`` is the time until it renews). ``cost_usd`` is
    None when the model has no price (``unpriced``): never counted as $0."""

    req: str
    job: str
    chat: str
    text: str = ""
    tool_calls: list[ToolCall] = []
    stop_reason: str = ""
    model: str = ""
    provider: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    unpriced: bool = False
    # The provider's stream carried no usage: the counts are the gateway's estimate.
    usage_estimated: bool = False
    attempts: int = 0
    error: str = ""
    error_kind: TurnError = ""
    retry_after: float | None = None
    # Set once, when today's spend crosses the warning share of the budget: for the user.
    budget_notice: str = ""


GatewayIn = TurnRequest
GatewayOut = TurnResult


# msgspec raises these two outside its DecodeError; the decoders turn them into one.
TOO_DEEP = "frame nests too deeply"
NOT_UTF8 = "frame holds a string that is not valid UTF-8"
# msgspec quotes a bad value whole; a reason sent back or logged stays this short.
MAX_REASON_CHARS = 200


def shorten(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class Codec:
    """One encoder and one decoder per frame family, made once per process and reused."""

    def __init__(self, frames: Any) -> None:
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(frames)

    def encode(self, frame: msgspec.Struct) -> bytes:
        return self.encoder.encode(frame)

    def decode(self, data: bytes | memoryview) -> Any:
        """The frame, or msgspec.DecodeError for any bad input (the only rejection type)."""
        try:
            return self.decoder.decode(data)
        except RecursionError:
            # A 1 kB frame of nested arrays reaches Python's recursion limit inside msgspec.
            raise msgspec.DecodeError(TOO_DEEP) from None
        except UnicodeDecodeError:
            raise msgspec.DecodeError(NOT_UTF8) from None
        except msgspec.DecodeError as error:
            if len(str(error)) <= MAX_REASON_CHARS:
                raise
            raise type(error)(shorten(str(error))) from None


# Why the router refused a client frame: warmwire's own words, the same whatever version of
# msgspec decoded it (its messages change between releases), documented in the README.
NOT_MSGPACK = "frame is not valid MessagePack (or holds a string that is not UTF-8)"
NOT_A_MAP = "frame must be a MessagePack map with a 'type' field"
NO_TYPE = "frame has no 'type' field"
UNKNOWN_TYPE = "unknown frame type {}; clients send type 'chat', 'history', 'learn' or 'search'"
FRAME_MISSING_FIELDS = "{} frame is missing {}"
FIELD_WRONG_KIND = "{} field '{}' must be a MessagePack {}, not {}"
INVALID_FRAME = "invalid {} frame"
# The chat frame's reasons, as earlier releases worded them.
MISSING_FIELDS = FRAME_MISSING_FIELDS.format("chat", "{}")
NOT_A_STRING = FIELD_WRONG_KIND.format("chat", "{}", "str", "{}")
INVALID_CHAT = INVALID_FRAME.format("chat")
CHAT_FIELDS = ("id", "chat", "sender", "text")
# Every client frame type: its required fields, then the MessagePack kind of each field.
CLIENT_FRAMES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "chat": (CHAT_FIELDS, dict.fromkeys(CHAT_FIELDS, "str")),
    "history": (("id", "chat"), {"id": "str", "chat": "str", "before": "str", "limit": "int"}),
    "learn": (("id", "text"), {"id": "str", "text": "str", "source": "str", "tags": "array",
                               "part": "int", "parts": "int"}),
    "search": (("id", "query"), {"id": "str", "query": "str", "mode": "str", "limit": "int"}),
}
_KINDS = {"str": str, "int": int, "array": list}


def _kind_of(value: Any) -> str:
    """A MessagePack type name, for a reason a client in any language understands."""
    if value is None:
        return "nil"
    if isinstance(value, (bytes, bytearray)):
        return "bin"
    return {bool: "bool", int: "int", float: "float", list: "array", dict: "map"}.get(type(value), type(value).__name__)


def describe_decode_error(data: bytes | memoryview) -> tuple[str, str]:
    """(message id if one can be read, a user-facing reason) for a client frame that failed
    to decode. Called only on the error path: decoding loosely a second time costs nothing
    on good frames."""
    try:
        loose = msgspec.msgpack.decode(data)
    except RecursionError:
        return "", TOO_DEEP
    except (msgspec.DecodeError, UnicodeDecodeError):
        return "", NOT_MSGPACK
    if not isinstance(loose, dict):
        return "", NOT_A_MAP
    frame_id = loose.get("id") if isinstance(loose.get("id"), str) else ""
    if "type" not in loose:
        return frame_id, NO_TYPE
    kind = loose["type"]
    if not isinstance(kind, str) or kind not in CLIENT_FRAMES:
        return frame_id, UNKNOWN_TYPE.format(shorten(repr(kind)))
    required, kinds = CLIENT_FRAMES[kind]
    missing = [name for name in required if name not in loose]
    if missing:
        return frame_id, FRAME_MISSING_FIELDS.format(kind, ", ".join(f"'{name}'" for name in missing))
    for name, expected in kinds.items():
        if name in loose and (type(loose[name]) is not _KINDS[expected]):
            if not (expected == "int" and loose[name] is None and name in ("part", "parts")):
                return frame_id, FIELD_WRONG_KIND.format(kind, name, expected, _kind_of(loose[name]))
    return frame_id, INVALID_FRAME.format(kind)
