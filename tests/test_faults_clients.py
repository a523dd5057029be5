"""Fault injection, misbehaving clients on the router's frontend (a real ZeroMQ TCP socket):
half a frame, a client that vanishes mid-message, 1,000 clients at once, a client that never
reads its replies. In every case a well-behaved client is still answered in time.
"""

from __future__ import annotations

import resource
import socket
import time
import uuid
from collections import Counter

import msgspec
import psutil
import pytest
import zmq

from conftest import ANSWER_DEADLINE, Warmwire, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CLIENTS_AT_ONCE = 1000
# Every one of the 1,000 clients gets its answer (or a notice) within this.
CROWD_DEADLINE = 60.0
# The router's per-client reply queue (router.frontend_hwm) in the test of a client that never
# reads.
FRONTEND_HWM = 100
# Messages a client that never reads sends, in two rounds (RSS is compared between them).
UNREAD_ROUND = 15000
# The router may grow this much over a second round of unread replies: its per-client queue
# is bounded by router.frontend_hwm, so the second round must not add another round's worth.
UNREAD_GROWTH_MAX = 32 << 20
# ZMTP 3.0 greeting of a NULL-mechanism client: signature, version 3.0, mechanism, as-server
# flag, filler (RFC 23).
ZMTP_GREETING = (b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0")
                 + b"\0" + b"\0" * 31)


def tcp_address(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    return host, int(port)


def well_behaved_answer(system: Warmwire) -> dict:
    """A fresh, well-behaved client's round trip, within the normal answer deadline."""
    frame = system.client().ask("hello there")
    assert frame["type"] == "reply", frame
    return frame


def router_process(system: Warmwire) -> psutil.Process:
    return psutil.Process(system.service("router")["pid"])


def test_half_a_frame_then_gone_leaves_the_router_serving(warmwire, figures):
    address = tcp_address(warmwire.frontend)
    vanished = 0
    # A greeting cut short; a full greeting then a frame header promising more than follows;
    # a peer that connects and says nothing at all (it stays open while we go on).
    silent = socket.create_connection(address)
    for payload in (ZMTP_GREETING[:5], ZMTP_GREETING + b"\x04\xff" + b"\x05READY", ZMTP_GREETING + b"\x02"):
        with socket.create_connection(address) as raw:
            raw.sendall(payload)
            vanished += 1
    well_behaved_answer(warmwire)
    # A real client sends a truncated MessagePack frame and disappears before the answer.
    ctx = zmq.Context.instance()
    for _ in range(20):
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 1000)  # the frame leaves before the socket closes
        dealer.connect(warmwire.frontend)
        whole = msgspec.msgpack.encode({"type": "chat", "id": uuid.uuid4().hex, "chat": "c",
                                        "sender": "s", "text": "hello"})
        dealer.send(whole[: len(whole) // 2])
        dealer.close()
        vanished += 1
    wait_for(lambda: warmwire.service("router")["stats"].get("bad_frames", 0) >= 20, ANSWER_DEADLINE,
             "the truncated frames to be read and rejected")
    well_behaved_answer(warmwire)
    silent.close()
    router = warmwire.service("router")
    assert router["restarts"] == 0 and router["state"] == "healthy"
    figures.append(f"faults-clients half frames: vanished clients={vanished} "
                   f"bad_frames={router['stats']['bad_frames']} "
                   f"undeliverable={router['stats'].get('undeliverable', 0)}")


def test_a_thousand_clients_at_once_are_all_answered(warmwire, figures):
    router = router_process(warmwire)
    soft, _ = router.rlimit(psutil.RLIMIT_NOFILE)
    assert soft > CLIENTS_AT_ONCE + 100, f"the router may open only {soft} files"
    # This process holds 1,000 sockets too: a descriptor each and one for its mailbox.
    mine, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if mine < 3 * CLIENTS_AT_ONCE:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * CLIENTS_AT_ONCE), hard))
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, CLIENTS_AT_ONCE + 100)
    crowd = []
    try:
        for _ in range(CLIENTS_AT_ONCE):
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(warmwire.frontend)
            crowd.append(dealer)
        ids = {}
        for number, dealer in enumerate(crowd):
            id = uuid.uuid4().hex
            ids[dealer] = id
            dealer.send(msgspec.msgpack.encode({"type": "chat", "id": id, "chat": f"crowd-{number}",
                                                "sender": "crowd", "text": "thanks!"}))
        poller = zmq.Poller()
        for dealer in crowd:
            poller.register(dealer, zmq.POLLIN)
        kinds: Counter[str] = Counter()
        answered: dict[str, dict] = {}
        checked_well_behaved = False
        end = time.monotonic() + CROWD_DEADLINE
        while len(answered) < CLIENTS_AT_ONCE and time.monotonic() < end:
            for dealer, _ in poller.poll(100):
                frame = msgspec.msgpack.decode(dealer.recv())
                assert frame["id"] == ids[dealer], frame
                answered[frame["id"]] = frame
                kinds[frame["type"] if frame["type"] == "reply" else f"notice:{frame['kind']}"] += 1
                poller.unregister(dealer)
            if not checked_well_behaved:  # while the crowd is still being served
                well_behaved_answer(warmwire)
                checked_well_behaved = True
        assert len(answered) == CLIENTS_AT_ONCE, f"{CLIENTS_AT_ONCE - len(answered)} clients got nothing"
        assert set(kinds) <= {"reply", "notice:busy"}, kinds
        replied = {id for id, frame in answered.items() if frame["type"] == "reply"}
        with warmwire.db() as db:
            stored = {row[0] for row in db.execute("SELECT id FROM messages WHERE sender = 'crowd'")}
        assert replied <= stored
        well_behaved_answer(warmwire)
        figures.append(f"faults-clients 1000 at once: sent={CLIENTS_AT_ONCE} replies={kinds['reply']} "
                       f"busy={kinds['notice:busy']} lost={len(replied - stored)} "
                       f"router open-file limit={soft}")
    finally:
        for dealer in crowd:
            dealer.close()
        ctx.term()


@pytest.fixture
def small_queues(home, make_env):
    """A system whose per-client reply queue is small, so a client that does not read fills it
    within a test (at the default of 10,000 frames the kernel's socket buffers absorb a
    few thousand replies more)."""
    system = Warmwire(home, make_env(WARMWIRE_ROUTER_FRONTEND_HWM=str(FRONTEND_HWM)))
    system.start()
    yield system
    system.stop()


def test_a_client_that_never_reads_does_not_hold_back_others_or_grow_the_router(small_queues, figures):
    warmwire = small_queues
    ctx = zmq.Context.instance()
    deaf = ctx.socket(zmq.DEALER)
    deaf.setsockopt(zmq.LINGER, 0)
    deaf.setsockopt(zmq.RCVHWM, 1)  # it never reads: let the replies pile up at the router
    deaf.setsockopt(zmq.RCVBUF, 4096)
    deaf.connect(warmwire.frontend)
    router = router_process(warmwire)
    sent = 0

    def send_round() -> None:
        nonlocal sent
        for _ in range(UNREAD_ROUND):
            deaf.send(msgspec.msgpack.encode({"type": "chat", "id": f"deaf-{sent}", "chat": "deaf",
                                              "sender": "deaf", "text": "thanks!"}))
            sent += 1
            if sent % 5000 == 0:
                well_behaved_answer(warmwire)  # answered in time while the deaf client floods

    def stored() -> int:
        with warmwire.db() as db:
            return db.execute("SELECT count(*) FROM messages WHERE chat = 'deaf'").fetchone()[0]

    try:
        send_round()
        wait_for(lambda: stored() == sent, 60, "the first round to be stored")
        after_first = router.memory_info().rss
        send_round()
        wait_for(lambda: stored() == sent, 60, "every message of the client that never reads to be stored")
        growth = router.memory_info().rss - after_first
        assert growth < UNREAD_GROWTH_MAX, f"the router grew {growth >> 20} MB over the second round"
        well_behaved_answer(warmwire)
        stats = warmwire.service("router")["stats"]
        log_lines = (warmwire.home / "logs" / "router.log").read_text().count("could not deliver")
        assert log_lines < 100, f"{log_lines} log lines about one client that does not read"
        figures.append(f"faults-clients never reads: sent={sent} stored={stored()} "
                       f"undeliverable={stats.get('undeliverable', 0)} router RSS growth over the "
                       f"second round={growth >> 20} MB, log lines={log_lines}")
    finally:
        deaf.close()
