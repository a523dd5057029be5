"""Row 1: message in → inline reply out, client to client.

warmwire: a DEALER client sends a greeting and waits for the reply, one at a time; each reply
left the router only after the store-writer committed it.
Baseline (the old design): the message is written to SQLite and a loop that polls every 2 s
picks it up.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import zmq

from proto.frames import Chat, ClientOut, Codec
from proto.sockets import connect_dealer

from .stats import Row, latency_row

MESSAGES = ("hi", "hello!", "thanks", "ok", "good morning", "สวัสดีครับ", "ขอบคุณค่ะ", "โอเค")
FULL_SAMPLES, QUICK_SAMPLES = 5000, 1000
WARMUP = 200
OLD_POLL_INTERVAL = 2.0
# The baseline's messages arrive at random moments over this window; its samples are few
# because each costs real waiting time, but they spread evenly over the poll period.
BASELINE_WINDOW = {True: 8.0, False: 20.0}
BASELINE_RATE = 10.0  # messages per second
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


def measure_polling_baseline(window: float, progress: Callable[[int, int], None]) -> list[float]:
    """The old orchestrator: rows in SQLite, found by a SELECT every 2 s."""
    with tempfile.TemporaryDirectory(prefix="ww-bench-poll-") as folder:
        path = Path(folder) / "messages.db"
        writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        writer.execute("CREATE TABLE messages (id TEXT PRIMARY KEY, text TEXT, written REAL, seen REAL)")
        done = threading.Event()
        latencies: list[float] = []

        def poll_loop() -> None:
            reader = sqlite3.connect(path, isolation_level=None)
            while not done.wait(OLD_POLL_INTERVAL):
                now = time.perf_counter()
                for (written,) in reader.execute("SELECT written FROM messages WHERE seen IS NULL"):
                    latencies.append((now - written) * 1000)
                reader.execute("UPDATE messages SET seen = ? WHERE seen IS NULL", (now,))
            reader.close()

        poller = threading.Thread(target=poll_loop, daemon=True)
        poller.start()
        count = int(window * BASELINE_RATE)
        for number in range(count):
            time.sleep(random.expovariate(BASELINE_RATE))
            writer.execute("INSERT INTO messages VALUES (?, ?, ?, NULL)",
                           (uuid.uuid4().hex, MESSAGES[number % len(MESSAGES)], time.perf_counter()))
            progress(number, count)
        # Let the poller see the last rows before stopping it.
        deadline = time.monotonic() + OLD_POLL_INTERVAL * 2
        while len(latencies) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        done.set()
        poller.join()
        writer.close()
        return latencies


def run(system, quick: bool, progress: Callable[[str, int, int], None]) -> Row:
    count = QUICK_SAMPLES if quick else FULL_SAMPLES
    samples = measure_warmwire(system.config.router.frontend, count,
                               lambda n, total: progress("inline: warmwire", n, total))
    baseline = measure_polling_baseline(BASELINE_WINDOW[quick],
                                        lambda n, total: progress("inline: 2 s poll baseline", n, total))
    return latency_row("inline_latency", "ms", samples, baseline, TARGET_P99_MS,
                       note="baseline: stored in SQLite, found by a 2 s poll")
