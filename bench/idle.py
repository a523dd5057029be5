"""What warmwire costs when nobody writes, counted whole: CPU time and wake-ups of every
warmwire process — supervisor, services, chroma and the ready agents' containers — from
/proc over the same window as the rebuilt old design's orchestrator, idle beside it.

Wake-ups are context switches (voluntary + involuntary) summed over every thread of every
process (/proc/<pid>/task/<tid>/status): a thread that sleeps and is woken counts one,
whatever woke it (a timer, a probe, a socket). CPU is utime + stime (/proc/<pid>/stat,
all threads). The services also count their own timer wake-ups (status: timer_wakeups);
the supervisor's health probes are wake-ups too, and are counted here like everything else.

Polls, counted against the target: wake-ups by a timer of warmwire's own code, per process —
the supervisor's probe rounds (it lists the times of its last rounds in status) and each
service's timer wake-ups. The target is per process, as the design's "a fallback sweep at most
once per 30 s" is per service; their sum is shown too. Not polls: the services' answers to
probes, ZeroMQ's I/O threads, and chroma's own threads (a Rust server whose timers warmwire
does not control); they are in the wake-ups and the CPU.

Nothing here asks the supervisor for status before the window ends (a status request brings
its fast probe pace back): pids come from /proc, and the window starts once the supervisor
has had time to reach its idle pace (supervisor/pace.py).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from services.pool_manager.backends.common import home_label
from supervisor.commands.status import fetch
from supervisor.pace import QUIET_ROUNDS

from .harness import live_stats
from .old_design.client import OldDesign
from .stats import Row

WINDOW = {True: 12.0, False: 60.0}
PER = 30.0  # wake-ups are reported per 30 s, the design's unit
TARGET_POLLS_PER_30S = 1.0
TARGET_CPU_PERCENT = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVICES = ("router", "store-writer", "search-cache", "pool-manager", "model-gateway", "web")
SETTLE = 2.0  # after the old orchestrator starts: its interpreter's start-up is not idle
CHROMA_MARK = "chromadb_rust_bindings"


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


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _groups(supervisor: int) -> dict[str, list[int]]:
    """The supervisor, each service and chroma, with their children, found from /proc."""
    groups: dict[str, list[int]] = {"supervisor": [supervisor]}
    direct = [pid for pid in _children(supervisor) if pid != supervisor and _parent(pid) == supervisor]
    for pid in direct:
        line = _cmdline(pid)
        name = "chroma" if CHROMA_MARK in line else next(
            (n for n in SERVICES if f"services.{n.replace('-', '_')}" in line), f"other {pid}")
        groups[name] = _children(pid)
    return groups


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def run(system, quick: bool, progress) -> Row:
    window = WINDOW[quick]
    supervisor = system.proc.pid
    services = {name: live_stats(system.config, name) for name in SERVICES}
    groups = _groups(supervisor)
    groups["agents"] = _container_pids(home_label(system.config))
    fast = system.config.supervisor.probe_interval
    # The last status request (the harness's, at start) set the fast pace: let it slow down.
    time.sleep((QUIET_ROUNDS + 2) * fast)
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
    ended = time.monotonic()
    supervisor_status = fetch(system.config).supervisor
    asked = time.monotonic()
    rounds = sum(1 for age in supervisor_status["probe_round_ages"] if asked - ended < age <= asked - started)
    timers = {name: (live_stats(system.config, name).get("timer_wakeups", 0) - timers_before[name]) * PER / seconds
              for name in SERVICES}
    timers["supervisor"] = rounds * PER / seconds
    progress("idle: done", 0, 1)
    old_figures = figures.pop("old design")
    wakeups = sum(f["wakeups_per_30s"] for f in figures.values())
    cpu = sum(f["cpu_percent"] for f in figures.values())
    polls = max(timers.values())
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
              f"polls (timer wake-ups of warmwire's own code) per 30 s: " + ", ".join(f"{n} {v:.1f}" for n, v in timers.items())
              + f"; counted against the target: the busiest process, {polls:.1f} (sum {sum(timers.values()):.1f}); the "
              f"supervisor probes every {system.config.supervisor.idle_probe_interval:g} s while idle, every {fast:g} s "
              "while traffic flows; chroma's and ZeroMQ's own threads are in the wake-ups, not the polls"),
        details={"cpu_percent": cpu, "baseline_cpu_percent": old_figures["cpu_percent"], "polls_per_30s": polls,
                 "polls_sum_per_30s": sum(timers.values()),
                 **{f"wakeups_{n}": f["wakeups_per_30s"] for n, f in figures.items()},
                 **{f"cpu_{n}": f["cpu_percent"] for n, f in figures.items()},
                 **{f"timer_wakeups_{n}": v for n, v in timers.items()}})
