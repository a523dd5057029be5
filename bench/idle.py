"""What warmwire costs when nobody writes, counted whole: CPU time and wake-ups of every
warmwire process — supervisor, services, chroma and the ready agents' containers — from
/proc over the same window as the rebuilt old design's orchestrator, idle beside it.

Wake-ups are context switches (voluntary + involuntary) summed over every thread of every
process (/proc/<pid>/task/<tid>/status): a thread that sleeps and is woken counts one,
whatever woke it (a timer, a probe, a socket). CPU is utime + stime (/proc/<pid>/stat,
all threads). The services also count their own timer wake-ups (status: timer_wakeups);
the supervisor's health probes (every supervisor.probe_interval) are wake-ups too, and
are counted here like everything else.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from services.pool_manager.backends.common import home_label
from supervisor.commands.status import fetch

from .harness import live_stats
from .old_design.client import OldDesign
from .stats import Row

WINDOW = {True: 15.0, False: 60.0}
PER = 30.0  # wake-ups are reported per 30 s, the design's unit
TARGET_POLLS_PER_30S = 1.0
TARGET_CPU_PERCENT = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVICES = ("router", "store-writer", "search-cache", "pool-manager")
SETTLE = 2.0  # after the old orchestrator starts: its interpreter's start-up is not idle


def _children(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        found.append(parent)
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                queue += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def _container_pids(label: str) -> list[int]:
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=warmwire.home={label}"],
                         capture_output=True, text=True).stdout.split()
    if not ids:
        return []
    pids = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", *ids], capture_output=True, text=True)
    return [p for pid in pids.stdout.split() if pid != "0" for p in _children(int(pid))]


def _sample(pids: list[int]) -> tuple[float, int]:
    """(CPU seconds, context switches) summed over these processes and all their threads."""
    cpu, switches = 0.0, 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
            for task in Path(f"/proc/{pid}/task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        switches += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            pass  # it exited during the window
    return cpu, switches


def _per_group(groups: dict[str, list[int]], before: dict, seconds: float) -> dict[str, dict]:
    out = {}
    for name, pids in groups.items():
        cpu, switches = _sample(pids)
        out[name] = {"cpu_percent": 100.0 * (cpu - before[name][0]) / seconds,
                     "wakeups_per_30s": (switches - before[name][1]) * PER / seconds}
    return out


def run(system, quick: bool, progress) -> Row:
    window = WINDOW[quick]
    supervisor = system.proc.pid
    services = {name: live_stats(system.config, name) for name in SERVICES}
    groups: dict[str, list[int]] = {"supervisor": [supervisor]}
    everything = set(_children(supervisor))
    for name in SERVICES:
        pid = _service_pid(system, name)
        groups[name] = _children(pid) if pid else []
    groups["chroma"] = sorted(everything - {supervisor} - {p for n in SERVICES for p in groups[n]})
    groups["agents"] = _container_pids(home_label(system.config))
    progress("idle: warmwire and the old design, no traffic", 0, 1)
    with OldDesign() as old:
        time.sleep(SETTLE)
        groups["old design"] = _children(old.pid)
        before = {name: _sample(pids) for name, pids in groups.items()}
        timers_before = {name: services[name].get("timer_wakeups", 0) for name in SERVICES}
        started = time.monotonic()
        time.sleep(window)
        seconds = time.monotonic() - started
        figures = _per_group(groups, before, seconds)
    timers = {name: (live_stats(system.config, name).get("timer_wakeups", 0) - timers_before[name]) * PER / seconds
              for name in SERVICES}
    progress("idle: done", 0, 1)
    old_figures = figures.pop("old design")
    wakeups = sum(f["wakeups_per_30s"] for f in figures.values())
    cpu = sum(f["cpu_percent"] for f in figures.values())
    # Polls: the services' own timers, and the supervisor's wake-ups (it has no traffic at
    # idle: each is its probe timer or the answer to a probe).
    polls = max(max(timers.values()), figures["supervisor"]["wakeups_per_30s"])
    return Row(
        name="idle", unit="wakeups/30s", p50=wakeups, p99=None, baseline_p50=old_figures["wakeups_per_30s"],
        baseline_p99=None, ratio=old_figures["wakeups_per_30s"] / wakeups if wakeups else float("inf"),
        target=f"<= {TARGET_POLLS_PER_30S:g} poll per 30 s, < {TARGET_CPU_PERCENT:g} % CPU",
        met=polls <= TARGET_POLLS_PER_30S and cpu < TARGET_CPU_PERCENT,
        samples=int(seconds), baseline_samples=int(seconds),
        note=(f"{seconds:.0f} s, every thread of every process from /proc: warmwire {cpu:.2f} % of one core, "
              f"{wakeups:.0f} wake-ups per 30 s ("
              + ", ".join(f"{n} {f['wakeups_per_30s']:.0f}" for n, f in figures.items())
              + f"); old design {old_figures['cpu_percent']:.2f} %, {old_figures['wakeups_per_30s']:.0f} per 30 s; "
              f"services' own timer wake-ups per 30 s: " + ", ".join(f"{n} {v:.1f}" for n, v in timers.items())
              + f"; polls per 30 s counted against the target: {polls:.1f} (the supervisor's wake-ups: its health "
              f"probes every {system.config.supervisor.probe_interval:g} s and their answers)"),
        details={"cpu_percent": cpu, "baseline_cpu_percent": old_figures["cpu_percent"], "polls_per_30s": polls,
                 **{f"wakeups_{n}": f["wakeups_per_30s"] for n, f in figures.items()},
                 **{f"cpu_{n}": f["cpu_percent"] for n, f in figures.items()},
                 **{f"timer_wakeups_{n}": v for n, v in timers.items()}})


def _service_pid(system, name: str) -> int | None:
    status = fetch(system.config)
    return next((s.pid for s in status.services if s.name == name), None) if status else None
