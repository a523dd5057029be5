"""New chats arriving together, through the running warmwire: bursts of 1, 5 and 20.

Each burst sends `size` container-full messages, each on a chat never seen before, at once,
from one client, and waits for every final frame. No burst waits for a ready agent first:
bursts come every BURST_EVERY seconds whatever the pool's state, so a pool that has not
refilled shows it as cold waits. The pool-manager times each acquisition from the job's
arrival to its agent holding it (cold waits included) and lists the latest in `status`
(pool.acquire_recent: [ms, 1 if it waited for a cold start]). The client side records when
each message got its first frame, the agent's "started" progress notice and its answer.
"""

from __future__ import annotations

import time
import uuid

import zmq

from proto.frames import Chat, ClientOut, Codec, Notice, Reply
from proto.sockets import connect_dealer

from .harness import live_stats

SIZES = (1, 5, 20)
REPEATS = {True: {1: 3, 5: 2, 20: 2}, False: {1: 20, 5: 6, 20: 4}}
# Start to start; chosen so a burst fits in it with room to spare, not so the pool can refill.
BURST_EVERY = {1: 2.0, 5: 4.0, 20: 6.0}
MESSAGE = "Please debug this stack trace and explain why the parser fails: KeyError 'port'"
ANSWER_TIMEOUT = 120.0
READY_DEADLINE = 60.0
STATUS_SETTLE = 0.05
INTERIM = ("queued", "progress", "delta")


def pool_stats(system) -> dict:
    return live_stats(system.config, "pool-manager")


def wait_for_floor(system) -> None:
    """Once, before the first burst: the pool's floor (min_ready) is up."""
    deadline = time.monotonic() + READY_DEADLINE
    while pool_stats(system)["pool"]["ready"] < system.config.pool.min_ready:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no ready agent within {READY_DEADLINE:g} s of start")
        time.sleep(STATUS_SETTLE)


def one_burst(sock, codec: Codec, size: int, prefix: str) -> dict[str, dict]:
    """Send `size` new chats at once; per message: sent, first, started, final, kind."""
    messages: dict[str, dict] = {}
    for _ in range(size):
        message_id = uuid.uuid4().hex
        messages[message_id] = {"sent": time.perf_counter()}
        sock.send(codec.encode(Chat(id=message_id, chat=f"{prefix}-{message_id}", sender="bench", text=MESSAGE)))
    done, deadline = 0, time.monotonic() + ANSWER_TIMEOUT
    while done < size and sock.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        frame = codec.decode(sock.recv())
        now = time.perf_counter()
        record = messages.get(frame.id)
        if record is None:
            continue
        record.setdefault("first", now)
        if isinstance(frame, Notice) and frame.kind in INTERIM:
            record.setdefault(frame.kind, now)
            continue
        record["final"], record["kind"] = now, "reply" if isinstance(frame, Reply) else frame.kind
        done += 1
    return messages


def drive(system, quick: bool, progress) -> dict:
    """{size: [{"messages": {...}, "acquire": [[ms, cold], ...]}, ...]}, the pool's stats
    after each size ("pool_after_<size>") and after all bursts ("pool")."""
    codec = Codec(ClientOut)
    sock = connect_dealer(zmq.Context.instance(), system.config.router.frontend)
    wait_for_floor(system)
    results: dict = {}
    try:
        for size in SIZES:
            results[size] = []
            repeats = REPEATS[quick][size]
            for number in range(repeats):
                started = time.monotonic()
                before = pool_stats(system)["pool"]["acquisitions"]
                messages = one_burst(sock, codec, size, f"burst{size}")
                time.sleep(STATUS_SETTLE)
                pool = pool_stats(system)["pool"]
                new = pool["acquisitions"] - before
                results[size].append({"messages": messages, "acquire": pool["acquire_recent"][-new:] if new else [],
                                      "target_after": pool["target_ready"]})
                progress(f"bursts of {size} new chats (warmwire)", number, repeats)
                time.sleep(max(0.0, started + BURST_EVERY[size] - time.monotonic()))
            results[f"pool_after_{size}"] = pool_stats(system)["pool"]
    finally:
        sock.close()
    results["pool"] = pool_stats(system)
    return results
