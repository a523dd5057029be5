"""Row 1: message in → inline reply out, client to client.

warmwire: a DEALER client sends a greeting and waits for the reply, one at a time; each reply
left the router only after the store-writer committed it.
Baseline: the rebuilt old design (bench/old_design) answering greetings one at a time, as it
answered every message: through its 2 s message poll and a cold container.
"""

from __future__ import annotations

import time
import uuid
from typing import Callable

import zmq

from proto.frames import Chat, ClientOut, Codec
from proto.sockets import connect_dealer

from .old_design import run as old_design
from .stats import Row, latency_row

MESSAGES = ("hi", "hello!", "thanks", "ok", "good morning", "สวัสดีครับ", "ขอบคุณค่ะ", "โอเค")
FULL_SAMPLES, QUICK_SAMPLES = 5000, 1000
WARMUP = 200
TARGET_P99_MS = 2.0
ANSWER_TIMEOUT_MS = 10_000


def measure_warmwire(frontend: str, count: int, progress: Callable[[int, int], None]) -> list[float]:
    codec = Codec(ClientOut)
    sock = connect_dealer(zmq.Context.instance(), frontend)
    samples = []
    try:
        for number in range(WARMUP + count):
            frame = codec.encode(Chat(id=uuid.uuid4().hex, chat="bench", sender="bench",
                                      text=MESSAGES[number % len(MESSAGES)]))
            started = time.perf_counter_ns()
            sock.send(frame)
            if not sock.poll(ANSWER_TIMEOUT_MS):
                raise RuntimeError("no reply from the router within 10 s")
            sock.recv()
            elapsed = time.perf_counter_ns() - started
            if number >= WARMUP:
                samples.append(elapsed / 1e6)
            if number % 100 == 0:
                progress(number, WARMUP + count)
    finally:
        sock.close()
    return samples


def run(system, quick: bool, progress: Callable[[str, int, int], None]) -> Row:
    count = QUICK_SAMPLES if quick else FULL_SAMPLES
    samples = measure_warmwire(system.config.router.frontend, count,
                               lambda n, total: progress("inline: warmwire", n, total))
    baseline = old_design.stages(old_design.session(quick, progress)["singles"])["total"]
    return latency_row("inline_latency", "ms", samples, baseline, TARGET_P99_MS,
                       note="one client, one message at a time; baseline: the rebuilt old design, which "
                            "answered a greeting like any message: written to SQLite, found by its 2 s poll, "
                            "a cold container that prepares its code, its result found by a 1 s poll")
