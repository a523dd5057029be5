"""Row 10: ten times more container-full messages than agent slots, all at once.

Every message must end with a reply or an explicit notice (queued first, or busy), and be in
the database exactly once: lost must be 0. Baseline: the old design's unbounded queue and
fixed 5 containers answered the same burst with no notice at all (it is not rebuilt here;
its column counts the messages that would have waited silently).
"""

from __future__ import annotations

import time
import uuid
from typing import Callable

import zmq

from proto.db import open_readonly
from proto.frames import Chat, ClientOut, Codec, Notice, Reply
from proto.sockets import connect_dealer
from supervisor.commands.status import fetch

from .stats import Row

OVERLOAD = 10
MESSAGE = "Refactor this function and explain the bug in detail: def f(x): return x[1]"
ANSWER_TIMEOUT_MS = 120_000
INTERIM = ("queued", "progress", "delta")


def run(system, quick: bool, progress: Callable[[str, int, int], None]) -> Row:
    status = fetch(system.config)
    slots = next(s.stats["limit"] for s in status.services if s.name == "pool-manager")
    count = OVERLOAD * slots
    codec = Codec(ClientOut)
    sock = connect_dealer(zmq.Context.instance(), system.config.router.frontend)
    ids = [uuid.uuid4().hex for _ in range(count)]
    started = time.monotonic()
    for message_id in ids:
        sock.send(codec.encode(Chat(id=message_id, chat=f"overload-{message_id}", sender="bench", text=MESSAGE)))
    final: dict[str, ClientOut] = {}
    queued: set[str] = set()
    while len(final) < count and sock.poll(ANSWER_TIMEOUT_MS):
        frame = codec.decode(sock.recv())
        if isinstance(frame, Notice) and frame.kind in INTERIM:
            if frame.kind == "queued":
                queued.add(frame.id)
            continue
        final[frame.id] = frame
        progress("overload: answers", len(final) - 1, count)
    sock.close()
    elapsed = time.monotonic() - started
    replies = sum(isinstance(f, Reply) for f in final.values())
    busy = sum(isinstance(f, Notice) and f.kind == "busy" for f in final.values())
    errors = len(final) - replies - busy
    error_texts = sorted({f.text for f in final.values() if isinstance(f, Notice) and f.kind != "busy"})
    reader = open_readonly(system.config.database, system.config.store.busy_timeout_ms)
    marks = ",".join("?" * len(ids))
    stored = reader.execute(f"SELECT count(*) FROM messages WHERE id IN ({marks})", ids).fetchone()[0]
    reader.close()
    lost = count - len(final) + (count - stored)
    return Row(
        name="overload", unit="lost", p50=float(lost), p99=None, baseline_p50=float(count - slots),
        baseline_p99=None, ratio=float("nan"), target="0 lost; every message answered or told",
        met=lost == 0 and errors == 0, samples=count, baseline_samples=count,
        note=(f"{count} messages for {slots} slots in {elapsed:.1f} s: {replies} replies, {len(queued)} "
              f"queued first, {busy} busy, {errors} errors, {stored} stored; baseline: no notice "
              "for the ones beyond 5 containers" + (f"; errors: {'; '.join(error_texts)}" if error_texts else "")),
        details={"sent": count, "slots": slots, "replies": replies, "queued": len(queued),
                 "busy": busy, "errors": errors, "stored": stored, "lost": lost})
