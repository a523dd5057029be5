"""A seeded, coverage-free fuzzer over every frame decoder and the IPC file parser.

Deterministic: the same seeds give the same inputs, so a failure is reproducible from the
seed it prints. Each input is a valid frame or file mutated in a structured way (truncated,
bit-flipped, a field swapped for a wrong type, a huge int, deep nesting, NaN, a string or
array whose header claims more than is there) or plain random bytes. It prints how many
inputs it tried and why they were rejected. The other hostile-input modules share its
settings and samples.
"""

from __future__ import annotations

import collections
import json
import random
import re
import signal
import struct
from contextlib import contextmanager

import msgspec
import pytest
from hypothesis import HealthCheck, settings

from proto import ipc
from proto.frames import (
    Chat, ClientIn, ClientOut, Codec, Committed, Control, Health, Hit, Job, JobProgress, JobResult,
    KnowledgeIn, KnowledgeOut, LearnAnswer, LearnRequest, Notice, Passage, PoolIn, PoolOut, Probe,
    RecallRequest, Reply, SaveAnswer, SaveExchange, SaveJob, SaveNote, SaveUsage, SearchAnswer,
    SearchRequest, StatusRequest, StoreError, StoreIn, StoredMessage, StoredNote, StoreOut, Turn,
)

pytestmark = pytest.mark.hostile

# Deterministic in CI, no example database left in the working tree, no per-example deadline
# (a shared 2-core machine stalls at times); every input is size-bounded instead, and
# `no_hang` turns a real hang into a failure.
SETTINGS = settings(derandomize=True, database=None, deadline=None, max_examples=150,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_INPUT_BYTES = 64 * 1024
HANG_SECONDS = 30
FUZZ_SEEDS = 5_000

# Every union a service decodes, named by who decodes it.
FAMILIES = {
    "router frontend (ClientIn)": ClientIn, "clients (ClientOut)": ClientOut,
    "every service's control socket (Control)": Control, "store-writer (StoreIn)": StoreIn,
    "store clients (StoreOut)": StoreOut, "search-cache (KnowledgeIn)": KnowledgeIn,
    "router, knowledge answers (KnowledgeOut)": KnowledgeOut, "pool-manager (PoolIn)": PoolIn,
    "router, job answers (PoolOut)": PoolOut,
}
CODECS = {name: Codec(frames) for name, frames in FAMILIES.items()}


def sample_frames() -> list[msgspec.Struct]:
    """One valid frame of every type, with every optional part filled in."""
    message = StoredMessage(id="m1", chat="c1", sender="s", text="hi", tier="inline", received_at=1.5)
    reply = Reply(id="m1", chat="c1", tier="inline", text="hello")
    return [
        Chat(id="m1", chat="c1", sender="s", text="สวัสดี hello"), reply,
        Notice(id="m1", kind="queued", text="queued, position 2", chat="c1", retry_after=3.0, position=2),
        Probe(seq=7), Health(seq=7, name="router", pid=42, state="healthy", stats={"a": [1, {"b": 2.5}]}),
        StatusRequest(), SaveExchange(message=message, answer=reply),
        SaveAnswer(message_id="m1", seq=1, status="answered", answer=reply),
        SaveJob(id="m1", message_id="m1", chat="c1", tier="container-full", state="running", container="x"),
        SaveUsage(job_id="m1", model="offline", input_tokens=10, output_tokens=20, cost_usd=0.01),
        SaveNote(note=StoredNote(id="n", text="t", source="s", created_at=2.0, tags=["a"], chat="c", part=1, parts=2)),
        Committed(keys=["m1"]), StoreError(keys=["m1"], error="disk full"),
        SearchRequest(req="r", query="q", mode="fts", limit=3), LearnRequest(req="r", text="t", tags=["x"]),
        RecallRequest(req="r", topic="t"), SearchAnswer(req="r", hits=[Hit(id="n", text="t", source="s", score=0.5)]),
        LearnAnswer(req="r", id="n", indexed=True),
        Job(id="m1", chat="c1", tier="container-full", model="m", text="t",
            history=[Turn(role="user", content="hi")], context=[Passage(text="p", source="s")]),
        JobProgress(id="m1", chat="c1", text="started", slots=2),
        JobResult(id="m1", chat="c1", text="answer", agent="offline", input_tokens=1, written_at=3.0, slots=2),
    ]


ENCODER = msgspec.msgpack.Encoder()
FRAME_BYTES = [ENCODER.encode(frame) for frame in sample_frames()]


@contextmanager
def no_hang(seconds: int = HANG_SECONDS):
    """Fail, rather than hang the suite, when one input takes longer than `seconds`."""
    def expired(*_):
        raise AssertionError(f"one input took over {seconds} s: a hang")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- structured mutations (one random choice each) -----------------------------------------

HOSTILE_VALUES = [2 ** 64 - 1, -(2 ** 63), float("nan"), float("inf"), "x" * 4000, [], {},
                  None, True, b"\x00\xff", [[[[[[]]]]]], {"type": "chat"}, "\x00"]
# Headers that claim a huge string, binary, array or map with none of it present.
CLAIMS = [b"\xdb\xff\xff\xff\xff", b"\xc6\x7f\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
          b"\xdf\xff\xff\xff\xff", b"\xda\xff\xff", b"\xdc\xff\xff"]


class Format:
    """How a mutation reads and rewrites one format (MessagePack frames, signed JSON files)."""

    def __init__(self, loads, dumps) -> None:
        self.loads, self.dumps = loads, dumps


MSGPACK = Format(msgspec.msgpack.decode, msgspec.msgpack.encode)


def _swap_field(rng: random.Random, data: bytes, fmt: Format) -> bytes:
    try:
        loose = fmt.loads(data)
    except (ValueError, RecursionError):
        return data
    if not isinstance(loose, dict) or not loose:
        return data
    key = rng.choice(sorted(loose))
    loose[key] = rng.choice(HOSTILE_VALUES)
    try:
        return fmt.dumps(loose)
    except (TypeError, ValueError):  # bytes in JSON, NaN in a signed file: keep the original
        return data


def _nest(rng: random.Random, data: bytes, open_byte: bytes, close: bytes) -> bytes:
    depth = rng.choice([10, 200, 1_000, 20_000])
    if rng.random() < 0.5:
        return data[:1] + open_byte * depth + data[1:]
    return open_byte * depth + close * (depth if close != b"\xc0" else 1)


def _nan(data: bytes) -> bytes:
    """The first float64 becomes NaN (or NaN is appended when there is none)."""
    at = data.find(b"\xcb")
    nan = b"\xcb" + struct.pack(">d", float("nan"))
    return data + nan if at < 0 else data[:at] + nan + data[at + 9:]


def _flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


MUTATIONS = {
    "truncate": lambda rng, d, fmt: d[:rng.randrange(len(d))],
    "bit flip": lambda rng, d, fmt: _flip(rng, d),
    "wrong field type": _swap_field,
    "deep nesting": lambda rng, d, fmt: (_nest(rng, d, b"\x91", b"\xc0") if fmt is MSGPACK
                                         else _nest(rng, d, b"[", b"]")),
    "claimed length": lambda rng, d, fmt: d[:rng.randrange(len(d))] + rng.choice(CLAIMS) + d[-rng.randrange(1, 4):],
    "random bytes": lambda rng, d, fmt: rng.randbytes(rng.randrange(64)),
    "NaN float": lambda rng, d, fmt: _nan(d) if fmt is MSGPACK else d.replace(b'"ts":1.0', b'"ts":NaN'),
}


def mutate(rng: random.Random, data: bytes, fmt: Format = MSGPACK) -> tuple[str, bytes]:
    name = rng.choice(sorted(MUTATIONS))
    return name, MUTATIONS[name](rng, data, fmt)[:MAX_INPUT_BYTES]


def reason_of(error: Exception) -> str:
    """A rejection's reason without its varying parts (numbers, names), for the tally."""
    return re.sub(r"`\$[^`]*`|'[^']*'|\d+", "…", str(error))[:70]


def check_rejection(error: Exception) -> None:
    text = str(error)
    assert text and len(text) < 500, f"unclear rejection: {text!r}"


def fuzz(seeds: int, samples: list[bytes], decode, rejected_as,
         fmt: Format = MSGPACK) -> tuple[collections.Counter, int]:
    """Feed `seeds` mutated samples to decode; tally rejections by reason."""
    reasons: collections.Counter = collections.Counter()
    accepted = 0
    for seed in range(seeds):
        rng = random.Random(seed)
        mutation, data = mutate(rng, rng.choice(samples), fmt)
        try:
            with no_hang():
                decode(data)
            accepted += 1
        except rejected_as as error:
            check_rejection(error)
            reasons[f"{type(error).__name__}: {reason_of(error)}"] += 1
        except Exception as error:  # anything else is a bug: name the seed to reproduce it
            raise AssertionError(f"seed {seed} ({mutation}) raised {type(error).__name__}: {error}") from error
    return reasons, accepted


def report(what: str, seeds: int, reasons: collections.Counter, accepted: int) -> None:
    print(f"\n[fuzz] {what}: {seeds} inputs, {accepted} accepted, {sum(reasons.values())} rejected")
    for reason, count in reasons.most_common(8):
        print(f"    {count:6d}  {reason}")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_seeded_fuzz_of_each_frame_decoder(family):
    codec = CODECS[family]
    reasons, accepted = fuzz(FUZZ_SEEDS, FRAME_BYTES, codec.decode, msgspec.DecodeError)
    report(family, FUZZ_SEEDS, reasons, accepted)
    assert sum(reasons.values()) > FUZZ_SEEDS // 2  # mostly rejections: the mutations bite


def ipc_samples(secret: ipc.Secret) -> list[bytes]:
    payloads = [{}, {"text": "สวัสดี", "usage": {"input_tokens": 3}}, {"stage": "started"}]
    return [ipc.encode(secret, kind, "chat-1", "job-1", seq, payload, ts=1.0)
            for seq, (kind, payload) in enumerate(zip(sorted(ipc.KINDS), payloads * 3))]


def signed_json(secret: ipc.Secret) -> Format:
    """JSON rewritten by the key holder: a compromised agent signs whatever it writes."""
    def dumps(body: dict) -> bytes:
        body = {k: v for k, v in body.items() if k != "sig"}
        return ipc._canonical({**body, "sig": secret.sign(ipc._canonical(body))})
    return Format(json.loads, dumps)


def test_seeded_fuzz_of_the_ipc_decoder():
    secret = ipc.Secret.generate()
    reasons, accepted = fuzz(FUZZ_SEEDS, ipc_samples(secret),
                             lambda data: ipc.decode(data, secret, ipc.ANY_CHAT), ipc.IpcError,
                             signed_json(secret))
    report("ipc.decode (agent and host files)", FUZZ_SEEDS, reasons, accepted)
    assert sum(reasons.values()) > FUZZ_SEEDS // 2
