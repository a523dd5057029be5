"""Fault injection, first half: kill -9 every process under a steady stream of all four tiers,
and freeze the store-writer under load. Nothing a user sent may be lost or stored twice.

The stream and its clients are in fault_stream.py. Each test reports its figures (messages,
replies, notices by kind, lost, duplicates, restart times) in pytest's summary (``figures``).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Callable

import docker.errors
import psutil
import pytest

from conftest import Client, Warmwire, free_port, wait_for
from fault_stream import TIER_TEXTS, Stream, check_storage, check_texts, describe, frame_kind
from proto.config import load
from services.pool_manager.backends.common import home_label
from test_pool import docker_engine

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# A hang guard, not a speed limit: how long the test waits for a recovery at all. The time
# it took is a figure printed at the end; speed belongs in bench/.
RECOVERY_DEADLINE = 30.0
# An agent chosen for docker kill can finish and go before the kill lands; choose again this often.
KILL_ATTEMPTS = 5
# Messages per second in the kill test, half of them for agents.
STREAM_RATE = 12.0
# How long the messages in flight at a kill may take to be answered (their clients resend
# every few seconds; jobs may wait in the queue behind others).
SETTLE_DEADLINE = 45.0

# The freeze test: how long the store-writer is stopped, the router's limit of writes
# waiting for it (low, so that the stream reaches it within the freeze), the stream's rate.
FREEZE_SECONDS = 10.0
PENDING_LIMIT = 16
FREEZE_RATE = 16.0
# What "does not grow without bound" means for a user's machine: while writes cannot be
# stored, a service's resident memory grows by at most this much, plus (for the router) room
# for each write it may hold: a message and its answer, their frames, the resend copy.
RSS_SLACK_MB = 8
RSS_PER_PENDING_WRITE_KB = 64
RSS_SAMPLE_INTERVAL = 0.25
# Nor do the logs: the freeze is one event, worth a few lines per process (the supervisor
# included), not a line per resend round.
FREEZE_LOG_LINES_PER_PROCESS = 5
# While the same store-writer stays frozen, one more client offers FLOOD messages of
# FLOOD_BYTES each (at most FLOOD_WINDOW unanswered): 16 MB that the router must refuse, not
# keep — holding them would show far above the RSS bound.
FLOOD = 2000
FLOOD_BYTES = 8192
FLOOD_WINDOW = 50
# The freeze test's mix: a quarter of it for agents, so that their queue never fills.
FREEZE_TEXTS = TIER_TEXTS[:4] * 3 + TIER_TEXTS[4:]
LEARN_TEXT = next(text for tier, text in TIER_TEXTS if text.startswith("จำไว้"))


# -- the system under test ---------------------------------------------------------------

def start_system(tmp_path_factory, name: str, **overrides: str) -> Warmwire:
    engine = docker_engine()
    home = tmp_path_factory.mktemp(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
    env.update(WARMWIRE_HOME=str(home), WARMWIRE_FRONTEND=f"tcp://127.0.0.1:{free_port()}",
               WARMWIRE_POOL_BACKEND="docker", **overrides)
    system = Warmwire(home, env)
    system.engine = engine
    system.label = home_label(load(env))
    system.start()
    return system


@pytest.fixture
def stopper():
    """Systems a test started, stopped at its end whatever happened."""
    systems: list[Warmwire] = []
    yield systems.append
    for system in systems:
        system.stop()


def pids(system: Warmwire) -> dict[str, int]:
    return {s["name"]: s["pid"] for s in system.status()["services"]}


def recovered(system: Warmwire, killed: dict[str, int]) -> bool:
    """Every service healthy, and each killed one running as a new process."""
    services = system.status()["services"]
    return bool(services) and all(s["state"] == "healthy" for s in services) \
        and all(s["pid"] != killed[s["name"]] for s in services if s["name"] in killed)


def pool_stats(system: Warmwire) -> dict:
    return system.service("pool-manager")["stats"]["pool"]


def timed_recovery(system: Warmwire, started: float, healthy: Callable[[], bool], what: str) -> tuple[float, float]:
    """Seconds from ``started`` until ``healthy`` holds, and until a warm agent is ready again.
    The second is a figure, not a promise: after a restart the ready agent goes to the chats
    whose jobs come back, and its replacement starts behind their cold starts."""
    wait_for(healthy, RECOVERY_DEADLINE, what)
    health = time.monotonic() - started
    wait_for(lambda: pool_stats(system)["ready"] >= 1, RECOVERY_DEADLINE, f"a warm agent after {what}")
    return health, time.monotonic() - started


def kill_and_time(system: Warmwire, names: list[str]) -> tuple[float, float]:
    """SIGKILL these services at once; seconds until the supervisor shows all healthy (and
    until a warm agent is ready)."""
    before = pids(system)
    killed = {name: before[name] for name in names}
    started = time.monotonic()
    for pid in killed.values():
        os.kill(pid, signal.SIGKILL)
    return timed_recovery(system, started, lambda: recovered(system, killed),
                          f"{', '.join(names)} to be restarted")


def running_jobs(system: Warmwire) -> set[str]:
    """Messages whose job an agent is running (as the pool-manager stored it)."""
    with system.db() as db:
        return {row[0] for row in db.execute("SELECT id FROM jobs WHERE state = 'running'")}


def kill_agent_container(system: Warmwire, victim: list[str | None]) -> tuple[float, float]:
    """docker kill an agent container, one running a job when there is one (added to
    ``victim``, or None). Returns the seconds until the pool has noticed with every service
    healthy (and until a warm agent is ready)."""
    for _attempt in range(KILL_ATTEMPTS):
        running = {c.name: c for c in system.engine.containers.list(
            filters={"label": f"warmwire.home={system.label}", "status": "running"})}
        assert running, "no agent container is running"
        with system.db() as db:
            busy = db.execute("SELECT id, container FROM jobs WHERE state = 'running' "
                              "ORDER BY updated_at DESC").fetchall()
        job, name = next(((job, name) for job, name in busy if name in running),
                         (None, next(iter(running))))
        lost = pool_stats(system)["lost"]
        started = time.monotonic()
        try:
            running[name].kill()
            break
        except docker.errors.APIError as exc:
            # The agent finished its job and was removed (404) or is stopping (409) between
            # the listing and the kill: choose again.
            if exc.status_code not in (404, 409):
                raise
    else:
        raise AssertionError(f"every agent chosen in {KILL_ATTEMPTS} tries was gone before the kill")
    victim.append(job)
    return timed_recovery(system, started, lambda: pool_stats(system)["lost"] > lost and system.healthy(),
                               "the pool to notice the killed agent")


# -- the tests ---------------------------------------------------------------------------

def test_kill_9_of_each_process_under_a_stream_of_all_tiers_loses_nothing(tmp_path_factory, stopper, figures):
    check_texts()
    system = start_system(tmp_path_factory, "faults-kill")
    stopper(system)
    wait_for(lambda: pool_stats(system)["ready"] >= 1, RECOVERY_DEADLINE, "a ready agent")
    stream = Stream(system.frontend, rate=STREAM_RATE)
    stream.start()
    stream.finals_after(16, 60, "the stream to flow before the first kill")
    recovery: dict[str, tuple[float, float]] = {}  # seconds to full health, to a warm agent
    in_flight: dict[str, list[str]] = {}  # messages unanswered at each kill

    def kill(name: str, action: Callable[[], tuple[float, float]]) -> None:
        # Each kill lands while agents are working on messages of this stream, and the
        # messages in flight then are answered before the next kill: none waits for a later
        # restart to be rescued.
        wait_for(lambda: running_jobs(system) & set(stream.open), 30, "a message in an agent's hands")
        in_flight[name] = list(stream.open)
        recovery[name] = action()
        stream.settle(in_flight[name], SETTLE_DEADLINE, f"the messages in flight when {name} was killed")
        stream.finals_after(8, 60, f"the stream to flow again after {name} was killed")

    for name in ("router", "store-writer", "search-cache", "pool-manager", "chroma"):
        kill(name, lambda name=name: kill_and_time(system, [name]))
    victim: list[str | None] = []
    kill("agent container", lambda: kill_agent_container(system, victim))
    kill("all children", lambda: kill_and_time(system, list(pids(system))))
    stream.finish()

    storage = check_storage(system, stream)
    figures.append(f"kill -9 under load: {describe(stream.tally)}, lost {storage['lost']}, "
                   f"duplicates {storage['duplicates']}")
    figures.append("kill -9 under load: messages in flight at each kill (all answered before the next): "
                   + ", ".join(f"{name} {len(ids)}" for name, ids in in_flight.items()))
    figures.append("kill -9 under load: seconds to full health (a warm agent ready): "
                   + ", ".join(f"{name} {health:.2f} ({warm:.2f})" for name, (health, warm) in recovery.items())
                   + f"; max {max(health for health, _ in recovery.values()):.2f}")
    assert stream.tally.finals["reply"] > 0
    stored_tiers = {m.tier for m in stream.messages.values() if m.final and frame_kind(m.final) == "reply"}
    assert stored_tiers == {tier for tier, _ in TIER_TEXTS}, stored_tiers
    if victim[0] is not None:  # the job its agent was running went to another agent
        assert frame_kind(stream.messages[victim[0]].final) == "reply", stream.messages[victim[0]].final
    # Containers of killed pool-managers were removed by the next one; the last one removes
    # its own at stop: none is left behind.
    system.stop()
    assert system.engine.containers.list(all=True, filters={"label": f"warmwire.home={system.label}"}) == []


class MemoryWatch:
    """Peak resident memory of every service (found by name: a restarted one is its new
    process) and the router's reported writes waiting, per phase of the test."""

    def __init__(self, system: Warmwire) -> None:
        self.system = system
        self.peak_mb: dict[str, dict[str, float]] = {}
        self.pending_writes: list[int] = []

    def sample(self, phase: str) -> None:
        peaks = self.peak_mb.setdefault(phase, {})
        for service in self.system.status()["services"]:
            if service["name"] == "router":
                self.pending_writes.append(service["stats"].get("pending_writes", 0))
            if service["pid"] is None:
                continue  # between a kill and its restart (and Process(None) is this one)
            try:
                rss = psutil.Process(service["pid"]).memory_info().rss / 2**20
            except psutil.Error:
                continue  # exited since the status was taken
            peaks[service["name"]] = max(peaks.get(service["name"], 0.0), rss)

    def watch(self, phase: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.sample(phase)
            time.sleep(RSS_SAMPLE_INTERVAL)

    def growth_mb(self, name: str, phases: tuple[str, ...]) -> float:
        return max(self.peak_mb[phase].get(name, 0.0) for phase in phases) - self.peak_mb["before"][name]


def flood(frontend: str) -> Counter:
    """Offer FLOOD big messages; return the kinds of their final frames."""
    client = Client(frontend)
    text = ("ข้อความยาว long message " * FLOOD_BYTES)[:FLOOD_BYTES]
    finals: Counter = Counter()
    sent = 0
    try:
        while sum(finals.values()) < FLOOD:
            while sent < FLOOD and sent - sum(finals.values()) < FLOOD_WINDOW:
                client.send(text, chat="flood", id=f"flood-{sent}")
                sent += 1
            frame = client.recv()
            if frame_kind(frame) not in ("queued", "progress", "delta"):
                finals[frame_kind(frame)] += 1
    finally:
        client.close()
    return finals


def same_process(pid: int, created: float) -> bool:
    try:
        return psutil.Process(pid).create_time() == created
    except psutil.NoSuchProcess:
        return False


# The supervisor probes every second and kills a service after missed_probes unanswered in a
# row: by default a frozen store-writer is killed and replaced after ~3 s (a writer that does
# not answer is no writer; the writes it held come again from their senders). Tolerating the
# whole freeze is the other outcome: the same process resumes. Both must lose nothing.
@pytest.mark.parametrize("outcome", ["replaced", "resumed"])
def test_store_writer_frozen_for_10_s_under_load_loses_nothing_and_says_busy(tmp_path_factory, stopper, figures, outcome):
    check_texts()
    overrides = {"WARMWIRE_ROUTER_MAX_PENDING_WRITES": str(PENDING_LIMIT)}
    if outcome == "resumed":
        overrides["WARMWIRE_SUPERVISOR_MISSED_PROBES"] = str(int(FREEZE_SECONDS * 3))
    system = start_system(tmp_path_factory, f"faults-freeze-{outcome}", **overrides)
    stopper(system)
    # The search-cache loads its model after it starts: a baseline before that is no baseline.
    wait_for(lambda: system.service("search-cache")["stats"].get("chroma") == "up", RECOVERY_DEADLINE,
             "the search-cache to load its model and reach chroma")
    memory = MemoryWatch(system)
    stream = Stream(system.frontend, rate=FREEZE_RATE, texts=FREEZE_TEXTS)
    stream.start()
    stream.finals_after(30, 60, "the stream to flow before the freeze")
    memory.watch("before", 2.0)

    frozen = system.service("store-writer")
    created = psutil.Process(frozen["pid"]).create_time()
    busy_before = stream.tally.frames["busy"]
    log_lines = len(system.logs().splitlines())
    os.kill(frozen["pid"], signal.SIGSTOP)
    frozen_at = time.monotonic()
    flooded: Counter = Counter()
    if outcome == "resumed":  # the writer stays frozen: the router stays at its limit
        wait_for(lambda: stream.tally.frames["busy"] > busy_before, FREEZE_SECONDS / 2, "a busy notice")
        flooded = flood(system.frontend)
        memory.sample("frozen")
    memory.watch("frozen", FREEZE_SECONDS - (time.monotonic() - frozen_at))
    if same_process(frozen["pid"], created):
        os.kill(frozen["pid"], signal.SIGCONT)
    freeze_log = system.logs().splitlines()[log_lines:]
    wait_for(system.healthy, RECOVERY_DEADLINE, "every service to be healthy after the freeze")
    busy_during = stream.tally.frames["busy"] - busy_before
    stream.finals_after(30, 60, "the stream to flow again after the freeze")
    memory.watch("after", 2.0)
    stream.finish()

    storage = check_storage(system, stream)
    writer = system.service("store-writer")
    growth = {name: round(memory.growth_mb(name, ("frozen", "after")), 1) for name in memory.peak_mb["before"]}
    figures.append(f"store-writer frozen {FREEZE_SECONDS:g} s ({outcome}): {describe(stream.tally)}, "
                   f"busy during the freeze {busy_during}, lost {storage['lost']}, duplicates {storage['duplicates']}, "
                   f"log lines during the freeze {len(freeze_log)}")
    figures.append(f"store-writer frozen ({outcome}): router writes waiting at most {max(memory.pending_writes)} "
                   f"(limit {PENDING_LIMIT} for new messages); flood of {FLOOD if flooded else 0} x "
                   f"{FLOOD_BYTES} B answered {dict(flooded)}; RSS growth MB {growth}; RSS before MB "
                   f"{ {name: round(mb, 1) for name, mb in memory.peak_mb['before'].items()} }")
    if outcome == "replaced":
        assert writer["pid"] != frozen["pid"] and writer["restarts"] == 1, writer
        assert "store-writer is unresponsive" in system.logs()
    else:
        assert writer["pid"] == frozen["pid"] and writer["restarts"] == 0, writer
    assert busy_during > 0, "the clients were never told the router is busy"
    # The only errors: notes to remember that could not be confirmed while nothing could be
    # stored, and the user is told so (not that the knowledge base is gone).
    errors = [m for m in stream.messages.values() if frame_kind(m.final) == "error"]
    assert all(m.text == LEARN_TEXT and "could not confirm" in m.final["text"] for m in errors), \
        [(m.text, m.final["text"]) for m in errors]
    processes = len(system.status()["services"]) + 1
    assert len(freeze_log) <= FREEZE_LOG_LINES_PER_PROCESS * processes, "\n".join(freeze_log)
    if outcome == "resumed":
        assert flooded == {"busy": FLOOD}, flooded
    router_bound = RSS_SLACK_MB + PENDING_LIMIT * RSS_PER_PENDING_WRITE_KB / 1024
    assert growth["router"] <= router_bound, growth
    assert all(mb <= RSS_SLACK_MB for mb in growth.values()), growth
