"""The fuzzer's frames sent to a running warmwire: to the client frontend, and to every
internal socket (as any local process of the same user could). Every service stays up (no
restart), the router answers each refused frame with an error notice that says why, and a
normal message is still answered afterwards.
"""

from __future__ import annotations

import collections
import random

import msgspec
import pytest
import zmq

from conftest import wait_for
from proto.config import load
from proto.frames import Job, Probe, SaveNote, SearchRequest, StoredNote
from proto.sockets import connect_dealer
from test_hostile_fuzz import FRAME_BYTES, mutate

pytestmark = [pytest.mark.slow, pytest.mark.hostile]
FRONTEND_FRAMES = 300
INTERNAL_FRAMES = 150
KNOWN_HOSTILE = [
    b"\x81\xa4type\xa4\xff\xfe\xfd\xfc",                     # a tag that is not UTF-8
    b"\x86" + FRAME_BYTES[0][1:] + b"\xa1z" + b"\x91" * 5_000 + b"\xc0",  # nested 5,000 deep
    b"\x81\xa4type\xdb\xff\xff\xff\xff",                     # claims a 4 GB string
    msgspec.msgpack.encode({"type": "x" * 100_000}),          # a huge tag
]
# Valid store frames whose values SQLite cannot hold.
POISON_STORE = [msgspec.msgpack.encode({"type": "save-usage", "job_id": "poison", "model": "m",
                                        "input_tokens": 2 ** 64 - 1, "output_tokens": 0, "cost_usd": 0.0})]


def services(warmwire) -> dict[str, tuple[int, int]]:
    return {s["name"]: (s["pid"], s["restarts"]) for s in warmwire.status()["services"]}


def test_fuzzed_frames_leave_every_service_up_and_each_gets_a_reason(warmwire):
    before = services(warmwire)
    client = warmwire.client()
    rng = random.Random(1)
    chat_samples = [FRAME_BYTES[0]]
    frames = KNOWN_HOSTILE + [mutate(rng, rng.choice(chat_samples))[1] for _ in range(FRONTEND_FRAMES)]
    for data in frames:
        client.send_raw(data)
    answers: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    for _ in frames:
        frame = client.recv()
        answers[frame["type"] if frame["type"] == "reply" else frame["kind"]] += 1
        if frame.get("kind") == "error":
            assert frame["text"] and len(frame["text"]) < 400, frame
            reasons[frame["text"][:40]] += 1
    print(f"\n[live] frontend: {len(frames)} fuzzed frames -> {dict(answers)}")
    for reason, count in reasons.most_common(6):
        print(f"    {count:5d}  {reason}")
    assert answers["error"] >= len(frames) // 2

    config = load(warmwire.env)
    ctx = zmq.Context.instance()
    # After the fuzzed frames, each socket gets a frame it answers: once the answer is back,
    # the service has read everything before it (a DEALER connection keeps order).
    sentinels = {
        config.endpoint("store"): (SaveNote(note=StoredNote(id="sentinel", text="t", source="s", created_at=1.0)),
                                   lambda frame: "sentinel" in frame.get("keys", [])),
        config.endpoint("search"): (SearchRequest(req="sentinel", query="anything", mode="fts"),
                                    lambda frame: frame.get("req") == "sentinel"),
        config.endpoint("pool"): (Job(id="sentinel", chat="sentinel", tier="container-light", model="m", text="hi"),
                                  lambda frame: frame.get("type") == "job-result" and frame.get("id") == "sentinel"),
        **{f"ipc://{warmwire.home}/run/{name}.ctl": (Probe(seq=424242), lambda frame: frame.get("seq") == 424242)
           for name in before if (warmwire.home / "run" / f"{name}.ctl").exists()},  # chroma: HTTP
    }
    sent = 0
    for endpoint, (sentinel, answered) in sentinels.items():
        sock = connect_dealer(ctx, endpoint)
        for data in KNOWN_HOSTILE + POISON_STORE + [mutate(rng, rng.choice(FRAME_BYTES))[1]
                                                    for _ in range(INTERNAL_FRAMES)]:
            sock.send(data)
            sent += 1
        sock.send(msgspec.msgpack.encode(sentinel))
        wait_for(lambda: sock.poll(100) and answered(msgspec.msgpack.decode(sock.recv())), 30,
                 f"{endpoint} to answer after the fuzzed frames")
        sock.close(linger=0)
    print(f"[live] internal sockets: {sent} fuzzed frames to {len(sentinels)} endpoints, each answered after")
    assert warmwire.client().ask("hello there")["type"] == "reply"
    assert services(warmwire) == before, "a service restarted"
