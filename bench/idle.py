"""Row 9: what warmwire costs when nobody writes — timer wake-ups and CPU.

Every service counts the times a timer (not traffic) woke it; nothing in warmwire polls for
messages or IPC files, so at idle only the IPC safety sweep (at most once per 30 s) and
housekeeping fire. The supervisor's 1 s health probes are counted apart: they are the
health check the design asks for. CPU is measured with psutil over the window for every
warmwire process (supervisor, services, chroma).
Baseline: the old design's loops — a SELECT on the messages table every 2 s and a listing
of an IPC folder every 1 s — run for the same window in a process of their own.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Callable

import psutil

from supervisor.commands.status import fetch

from .stats import Row

WINDOW = {True: 15.0, False: 60.0}
PER = 30.0  # wake-ups are reported per 30 s, the design's unit
TARGET_WAKEUPS_PER_30S = 1.0
TARGET_CPU_PERCENT = 1.0
OLD_MESSAGE_POLL, OLD_IPC_POLL = 2.0, 1.0


def _old_loops(folder: str, until: float, out) -> None:
    conn = sqlite3.connect(Path(folder) / "messages.db", isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, seen INTEGER)")
    ipc = Path(folder) / "ipc"
    ipc.mkdir(exist_ok=True)
    next_message, next_ipc, wakeups = time.time(), time.time(), 0
    while (now := time.time()) < until:
        if now >= next_message:
            conn.execute("SELECT id FROM messages WHERE seen = 0").fetchall()
            next_message += OLD_MESSAGE_POLL
        if now >= next_ipc:
            list(ipc.iterdir())
            next_ipc += OLD_IPC_POLL
        wakeups += 1
        time.sleep(max(0.0, min(next_message, next_ipc) - time.time()))
    out.put(wakeups)


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _warmwire_processes(system) -> list[psutil.Process]:
    supervisor = psutil.Process(system.proc.pid)
    return [supervisor, *supervisor.children(recursive=True)]


def _timer_wakeups(system) -> dict[str, int]:
    status = fetch(system.config)
    return {s.name: s.stats.get("timer_wakeups", 0) for s in status.services}


def measure_baseline(window: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="ww-bench-idle-") as folder:
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        worker = ctx.Process(target=_old_loops, args=(folder, time.time() + window, out))
        worker.start()
        process = psutil.Process(worker.pid)
        time.sleep(window / 2)  # measure the steady state, after the interpreter started
        cpu_before, started = _cpu_seconds([process]), time.monotonic()
        wakeups = out.get()
        cpu = _cpu_seconds([process]) if worker.is_alive() else cpu_before
        worker.join()
        elapsed = time.monotonic() - started
    return wakeups * PER / window, 100.0 * max(0.0, cpu - cpu_before) / max(elapsed, 1e-9)


def run(system, quick: bool, progress: Callable[[str, int, int], None]) -> Row:
    window = WINDOW[quick]
    progress("idle: warmwire with no traffic", 0, 2)
    processes = _warmwire_processes(system)
    wakeups_before, cpu_before = _timer_wakeups(system), _cpu_seconds(processes)
    started = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - started
    cpu = 100.0 * (_cpu_seconds(processes) - cpu_before) / elapsed
    wakeups_after = _timer_wakeups(system)
    per_service = {name: (wakeups_after[name] - wakeups_before.get(name, 0)) * PER / elapsed
                   for name in wakeups_after}
    busiest = max(per_service.values()) if per_service else 0.0
    progress("idle: old polling loops baseline", 1, 2)
    base_wakeups, base_cpu = measure_baseline(window)
    progress("idle: done", 1, 2)
    return Row(
        name="idle", unit="wakeups/30s", p50=busiest, p99=None, baseline_p50=base_wakeups,
        baseline_p99=None, ratio=base_wakeups / busiest if busiest else float("inf"),
        target=f"<= {TARGET_WAKEUPS_PER_30S:g} poll per 30 s, < {TARGET_CPU_PERCENT:g} % CPU",
        met=busiest <= TARGET_WAKEUPS_PER_30S and cpu < TARGET_CPU_PERCENT,
        samples=int(elapsed), baseline_samples=int(window),
        note=(f"timer wake-ups per 30 s of the busiest service ({window:g} s window); all warmwire "
              f"processes {cpu:.2f} % of one core (baseline loop {base_cpu:.2f} %); the supervisor's "
              f"1 s health probes are not counted as polls"),
        details={"cpu_percent": cpu, "baseline_cpu_percent": base_cpu, "processes": len(processes),
                 **{f"wakeups_{name}": value for name, value in per_service.items()}})
