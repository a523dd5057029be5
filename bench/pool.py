"""Rows 4-6: warm acquisition against a cold start per job, the cold start itself, and an
agent's result file to the reply leaving the router against a 1 s polling reader.

The agent rows drive the running warmwire (Docker when an engine and the image are there,
else local processes, as `status` says): container-full messages, each on a new chat, one at
a time, each sent once a ready agent is waiting. The pool-manager and the router measure
their side (acquire, create → ready, result file → reply) and report it in `status`.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import zmq

from images.measure import cold_starts_without_bytecode
from proto.frames import Chat, ClientOut, Codec, Reply
from proto.sockets import connect_dealer
from supervisor.commands.status import fetch

from .stats import Row, percentile

JOBS = {True: 20, False: 100}
MESSAGE = "Please debug this stack trace and explain why the parser fails: KeyError 'port'"
READY_DEADLINE = 30.0
ANSWER_TIMEOUT_MS = 60_000
WAIT_INTERVAL = 0.02
OLD_POLL_INTERVAL = 1.0
POLL_BASELINE_FILES = {True: 20, False: 60}
POLL_BASELINE_RATE = 4.0  # files per second
COLD_BASELINE_RUNS = {True: 5, False: 20}
TARGETS = {"pool_acquire": 10.0, "cold_start": 500.0, "ipc_reply": 2.0}


def _stats(system) -> dict:
    status = fetch(system.config)
    return {s.name: s.stats for s in status.services} if status else {}


def _wait_ready(system) -> None:
    deadline = time.monotonic() + READY_DEADLINE
    while _stats(system).get("pool-manager", {}).get("pool", {}).get("ready", 0) < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("no ready agent within 30 s")
        time.sleep(WAIT_INTERVAL)


def drive_agents(system, count: int, progress: Callable[[str, int, int], None]) -> dict:
    codec = Codec(ClientOut)
    sock = connect_dealer(zmq.Context.instance(), system.config.router.frontend)
    try:
        for number in range(count):
            _wait_ready(system)
            message_id = uuid.uuid4().hex
            sock.send(codec.encode(Chat(id=message_id, chat=f"bench-{message_id}", sender="bench", text=MESSAGE)))
            while True:
                if not sock.poll(ANSWER_TIMEOUT_MS):
                    raise RuntimeError("no answer from the agent within 60 s")
                frame = codec.decode(sock.recv())
                if isinstance(frame, Reply):
                    break
                if frame.kind not in ("queued", "progress", "delta"):
                    raise RuntimeError(f"the agent did not answer: {frame.text}")
            progress("agents: one job per new chat", number, count)
    finally:
        sock.close()
    time.sleep(system.config.supervisor.probe_interval * 1.5)  # let status catch up
    return _stats(system)


def polling_reader_baseline(count: int, progress: Callable[[str, int, int], None]) -> list[float]:
    """The old IPC reader: list the folder every second; latency = seen - renamed."""
    with tempfile.TemporaryDirectory(prefix="ww-bench-ipc-") as folder:
        renamed: dict[str, float] = {}
        latencies: list[float] = []
        done = threading.Event()

        def poll() -> None:
            seen: set[str] = set()
            while not done.wait(OLD_POLL_INTERVAL):
                now = time.perf_counter()
                for name in Path(folder).iterdir():
                    if name.name not in seen and name.name in renamed:
                        seen.add(name.name)
                        latencies.append((now - renamed[name.name]) * 1000)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        for number in range(count):
            time.sleep(random.expovariate(POLL_BASELINE_RATE))
            name = f"{number:010d}-result.json"
            (Path(folder) / f".{name}").write_text("{}")
            renamed[name] = time.perf_counter()
            (Path(folder) / f".{name}").rename(Path(folder) / name)
            progress("ipc: 1 s polling reader baseline", number, count)
        deadline = time.monotonic() + OLD_POLL_INTERVAL * 3
        while len(latencies) < count and time.monotonic() < deadline:
            time.sleep(WAIT_INTERVAL)
        done.set()
        poller.join()
        return latencies


def run(system, quick: bool, progress: Callable[[str, int, int], None]) -> list[Row]:
    stats = drive_agents(system, JOBS[quick], progress)
    pool = stats["pool-manager"]["pool"]
    backend = stats["pool-manager"]["backend"]
    jobs = stats["router"]["jobs"]
    baseline = polling_reader_baseline(POLL_BASELINE_FILES[quick], progress)
    note = f"{backend} backend, {pool['acquisitions']} acquisitions, {pool['created']} agents created"
    if backend == "docker":
        progress("cold start without bytecode (baseline)", 0, COLD_BASELINE_RUNS[quick])
        old_starts = cold_starts_without_bytecode(system.config.pool.image, COLD_BASELINE_RUNS[quick])
    else:
        old_starts = []
    rows = [
        Row(name="pool_acquire", unit="ms", p50=pool["acquire_p50_ms"], p99=pool["acquire_p99_ms"],
            baseline_p50=pool["cold_start_p50_ms"], baseline_p99=pool["cold_start_p99_ms"],
            ratio=pool["cold_start_p50_ms"] / pool["acquire_p50_ms"],
            target=f"p99 < {TARGETS['pool_acquire']:g} ms", met=pool["acquire_p99_ms"] < TARGETS["pool_acquire"],
            samples=pool["acquisitions"], baseline_samples=pool["created"],
            note=f"baseline: a cold start per job; {note}"),
        Row(name="cold_start", unit="ms", p50=pool["cold_start_p50_ms"], p99=pool["cold_start_p99_ms"],
            baseline_p50=percentile(old_starts, 0.5) if old_starts else pool["cold_start_p50_ms"],
            baseline_p99=percentile(old_starts, 0.99) if old_starts else pool["cold_start_p99_ms"],
            ratio=(percentile(old_starts, 0.5) / pool["cold_start_p50_ms"]) if old_starts else 1.0,
            target=f"p50 < {TARGETS['cold_start']:g} ms", met=pool["cold_start_p50_ms"] < TARGETS["cold_start"],
            samples=pool["created"], baseline_samples=len(old_starts), baseline_distribution=old_starts,
            note=f"create -> signed ready file seen, in the live pool-manager while it serves jobs ({backend} "
                 "backend); baseline: the same container compiling the runner at start (no pre-built "
                 "bytecode), started one at a time on an otherwise idle engine"
                 + ("" if old_starts else "; not measured without Docker, so the row is its own baseline")),
    ]
    p50, p99 = jobs["result_to_reply_p50_ms"], jobs["result_to_reply_p99_ms"]
    base50, base99 = percentile(baseline, 0.5), percentile(baseline, 0.99)
    rows.append(Row(name="ipc_reply", unit="ms", p50=p50, p99=p99, baseline_p50=base50,
                    baseline_p99=base99, ratio=base50 / p50, target=f"p99 < {TARGETS['ipc_reply']:g} ms",
                    met=p99 < TARGETS["ipc_reply"], samples=jobs["results"], baseline_samples=len(baseline),
                    baseline_distribution=baseline,
                    note="result file renamed -> reply committed and sent by the router; "
                         "baseline: a 1 s polling reader"))
    return rows
