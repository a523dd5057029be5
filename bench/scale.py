"""How cost grows with the work: inline messages at 1, 10 and 100 concurrent clients (rate,
p99, CPU per 1,000 messages), and memory per ready agent.

Clients: CLIENT_PROCESSES processes share the clients, each client a DEALER of its own that
sends a greeting, waits for the reply and sends the next (closed loop) for DURATION s, all
processes started and connected first and then begun together. Every reply left the router
after its commit. CPU is every warmwire process's utime+stime (/proc) over the same window;
the clients' own CPU is reported beside it: they share its cores. Baseline for the rate: the
rebuilt old design's throughput under its burst of 20 new chats (the most concurrent traffic
it is given in this run).

Memory: for every ready agent, its container's memory (cgroup, as `docker stats` shows it)
plus the proportional set size (PSS, /proc/<pid>/smaps_rollup) of the containerd shim that
holds it on the host. PSS, not RSS: every shim maps the same Go binary, and RSS counts those
shared pages once per shim, so N agents' RSS adds up to more than they hold (a shim's RSS is
~13 MiB, its PSS ~5 MiB with three alive); the shims' RSS is shown beside it. The old design
kept no agent ready: no baseline.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import subprocess
import time
import uuid
from pathlib import Path

import zmq

from proto.frames import Chat, ClientOut, Codec
from proto.metrics import percentile
from proto.sockets import connect_dealer
from services.pool_manager.backends.common import home_label

from .idle import _children, _sample
from .old_design import run as old_design
from .stats import Row

CLIENTS = (1, 10, 100)
CLIENT_PROCESSES = 2
DURATION = {True: 2.0, False: 5.0}
TARGET_RATE = 10_000          # messages/s at 100 clients
TARGET_P99_MS = 20.0          # at 100 clients
TARGET_AGENT_MB = 16.0
MESSAGES = ("hi", "thanks", "ok", "สวัสดีครับ", "ขอบคุณค่ะ")
SAMPLE_EVERY = 5              # latency samples kept: every 5th reply per process
POLL_MS = 1000
CLIENT_START_LEAD = 2.0    # s for the client processes to start and connect before they begin
MB = 1 << 20
KIB = 1024


def _clients(frontend: str, count: int, start: float, until: float, out) -> None:
    """``count`` clients, each sending its next message when its last is answered, from
    ``start`` to ``until`` (wall clock, shared by the processes); their replies and latencies."""
    codec = Codec(ClientOut)
    ctx = zmq.Context()
    poller = zmq.Poller()
    sent: dict[zmq.Socket, float] = {}
    sockets = [connect_dealer(ctx, frontend) for _ in range(count)]
    prefix = uuid.uuid4().hex
    # Every message is new (a new id), and so is every id: a counter after a random prefix.
    messages = ((f"{prefix}-{n}", MESSAGES[n % len(MESSAGES)]) for n in itertools.count())

    def send(sock: zmq.Socket, number: int) -> None:
        message_id, text = next(messages)
        sent[sock] = time.perf_counter()
        sock.send(codec.encode(Chat(id=message_id, chat=f"{prefix}-{number}", sender="bench", text=text)))

    late = time.time() - start  # > 0: this process was ready after the others began
    time.sleep(max(0.0, -late))
    cpu_started = time.process_time()
    for number, sock in enumerate(sockets):
        poller.register(sock, zmq.POLLIN)
        send(sock, number)
    numbers = {sock: number for number, sock in enumerate(sockets)}
    done, latencies = 0, []
    while time.time() < until:
        for sock, _ in poller.poll(POLL_MS):
            sock.recv()
            now = time.perf_counter()
            done += 1
            if done % SAMPLE_EVERY == 0:
                latencies.append((now - sent[sock]) * 1000)
            send(sock, numbers[sock])
    cpu = time.process_time() - cpu_started
    for sock in sockets:
        sock.close(linger=0)
    ctx.term()
    out.put((done, latencies, max(0.0, late), cpu))


def drive(frontend: str, clients: int, duration: float) -> dict:
    """Replies per second over ``duration`` s: every client process is started and connected
    first, and all begin together (starting a process is not warmwire's time)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    processes = min(CLIENT_PROCESSES, clients)
    start = time.time() + CLIENT_START_LEAD
    until = start + duration
    procs = [ctx.Process(target=_clients, args=(frontend, clients // processes + (n < clients % processes),
                                                start, until, out)) for n in range(processes)]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    late = max(result[2] for result in results)
    if late:
        raise RuntimeError(f"a client process was ready {late:.2f} s after the clients began; "
                           f"raise CLIENT_START_LEAD ({CLIENT_START_LEAD:g} s)")
    return {"done": sum(result[0] for result in results),
            "latencies": [ms for result in results for ms in result[1]],
            "clients_cpu_s": sum(result[3] for result in results)}


def _agent_memory(system) -> list[tuple[float, float]]:
    """Per agent alive: (cgroup memory + shim PSS, shim RSS) in MiB."""
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=warmwire.home={home_label(system.config)}"],
                         capture_output=True, text=True).stdout.split()
    if not ids:
        return []
    usage = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.ID}} {{.MemUsage}}", *ids],
                           capture_output=True, text=True).stdout.splitlines()
    pids = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", *ids], capture_output=True, text=True)
    shims = [_shim_memory(pid) for pid in pids.stdout.split()]
    return [(_mib(line.split()[1]) + pss, rss) for line, (pss, rss) in zip(usage, shims)]


def _shim_memory(container_pid: str) -> tuple[float, float]:
    """(PSS, RSS) in MiB of the containerd shim that is the container's parent process."""
    try:
        parent = int(Path(f"/proc/{container_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        fields = dict(line.split()[:2] for line in Path(f"/proc/{parent}/smaps_rollup").read_text().splitlines()[1:])
        return int(fields["Pss:"]) * KIB / MB, int(fields["Rss:"]) * KIB / MB
    except (OSError, ValueError, IndexError, KeyError):
        return 0.0, 0.0


def _mib(text: str) -> float:
    for unit, factor in (("GiB", 1024.0), ("MiB", 1.0), ("KiB", 1 / 1024), ("B", 1 / MB)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float("nan")


def run(system, quick: bool, progress) -> list[Row]:
    frontend = system.config.router.frontend
    processes = _children(system.proc.pid)
    old = old_design.session(quick, progress)
    old_rate = len(old["burst_20"]) / old["burst_20_seconds"]
    rows = []
    for number, clients in enumerate(CLIENTS):
        progress(f"scale: inline, {clients} clients", number, len(CLIENTS) + 1)
        cpu_before = _sample(processes)[0]
        seconds = DURATION[quick]
        figures = drive(frontend, clients, seconds)
        cpu = _sample(processes)[0] - cpu_before
        rate = figures["done"] / seconds
        per_1000 = 1000 / max(figures["done"], 1)
        p50, p99 = percentile(figures["latencies"], 0.5), percentile(figures["latencies"], 0.99)
        at_target = clients == CLIENTS[-1]
        rows.append(Row(
            name=f"inline_clients_{clients}", unit="msg/s", p50=rate, p99=None, baseline_p50=old_rate,
            baseline_p99=None, ratio=rate / old_rate if old_rate else float("nan"),
            target=f">= {TARGET_RATE} msg/s, p99 < {TARGET_P99_MS:g} ms" if at_target else "(a point on the curve)",
            met=(rate >= TARGET_RATE and p99 is not None and p99 < TARGET_P99_MS) if at_target else True,
            samples=figures["done"], baseline_samples=len(old["burst_20"]), distribution=figures["latencies"],
            distribution_unit="ms",
            note=(f"{clients} clients in a closed loop for {seconds:g} s: latency p50 {p50 or 0:.2f} / p99 "
                  f"{p99 or 0:.2f} ms; CPU {cpu * per_1000:.2f} s per 1,000 messages (all warmwire processes; "
                  f"the clients' own {figures['clients_cpu_s'] * per_1000:.2f} s, on the same {os.cpu_count()} "
                  "cores); baseline: the old design's messages/s under its burst of 20"),
            details={"latency_p50_ms": p50, "latency_p99_ms": p99, "cpu_s_per_1000": cpu * per_1000,
                     "clients_cpu_s_per_1000": figures["clients_cpu_s"] * per_1000,
                     "cpu_percent": 100 * cpu / seconds}))
    progress("scale: memory per ready agent", len(CLIENTS), len(CLIENTS) + 1)
    measured = _agent_memory(system)
    memory = [total for total, _ in measured]
    shim_rss = percentile([rss for _, rss in measured], 0.5) if measured else 0.0
    p50, p99 = percentile(memory, 0.5), percentile(memory, 0.99)
    rows.append(Row(
        name="memory_per_agent", unit="MiB", p50=p50, p99=p99, baseline_p50=None, baseline_p99=None,
        ratio=float("nan"), target=f"<= {TARGET_AGENT_MB:g} MiB", met=p99 is not None and p99 <= TARGET_AGENT_MB,
        samples=len(memory), baseline_samples=0, distribution=memory,
        note=(f"{len(memory)} agents alive (ready or kept for their chat): container memory (cgroup) + its "
              f"containerd shim's PSS (its RSS, which counts the shims' shared code once each: p50 {shim_rss:.1f} MiB); "
              "no baseline: the old design kept no agent ready"),
        details={"shim_rss_p50_mib": shim_rss}))
    return rows
