"""The agent rows: acquisition under bursts of new chats (1, 5, 20), overload, cold start and
an agent's result to the reply, warmwire against the rebuilt old design in the same run.

warmwire: bench/bursts.py drives the running warmwire. The old design: bench/old_design/run.py
runs the same traffic through the old orchestrator (2 s poll, a cold `docker run` per job
that prepares its code at start, 5 slots, a 1 s polling IPC reader).
"""

from __future__ import annotations

import math

from proto.metrics import percentile

from . import bursts
from .old_design import run as old_design
from .harness import live_stats
from .stats import Row

MS = 1000.0
TARGET_ACQUIRE_P99_MS = {1: 10.0, 5: 100.0, 20: 1500.0}
TARGET_COLD_START_P50_MS = 500.0
TARGET_IPC_REPLY_P99_MS = 2.0
# Published reference: kubernetes-sigs/agent-sandbox, warm pool adoption.
REFERENCE = "agent-sandbox warm adoption p50 92 ms, p99 376 ms (kubernetes-sigs/agent-sandbox)"
# A user who hears nothing this long after writing was "never told anything" while waiting.
TOLD_WITHIN_S = 2.0
OVERLOAD_SIZE = 20


def _p(samples: list[float], fraction: float) -> float | None:
    return percentile(samples, fraction) if samples else None


def _ratio(base: float | None, value: float | None) -> float:
    return base / value if base and value else math.nan


def acquisition_row(size: int, runs: list[dict], old: list[dict], refill: float | None) -> Row:
    first, later = runs[0], runs[1:] or runs[:1]
    steady = [ms for run in later for ms, _ in run["acquire"]]
    every = [ms for run in runs for ms, _ in run["acquire"]]
    cold_first = sum(cold for _, cold in first["acquire"])
    cold_later = sum(cold for run in later for _, cold in run["acquire"])
    to_start = [(m["progress"] - m["sent"]) * MS for run in runs for m in run["messages"].values() if "progress" in m]
    old_acquire = old_design.stages(old)["acquire"]
    p50, p99 = _p(steady, 0.5), _p(steady, 0.99)
    target = TARGET_ACQUIRE_P99_MS[size]
    return Row(
        name=f"pool_acquire_burst_{size}", unit="ms", p50=p50, p99=p99,
        baseline_p50=_p(old_acquire, 0.5), baseline_p99=_p(old_acquire, 0.99),
        ratio=_ratio(_p(old_acquire, 0.5), p50), target=f"p99 < {target:g} ms", met=p99 is not None and p99 < target,
        samples=len(steady), baseline_samples=len(old_acquire), distribution=steady, baseline_distribution=old_acquire,
        note=(f"job's arrival at the pool-manager -> agent holding it, cold waits included; {len(runs)} bursts "
              f"of {size} new chats; p50/p99 over the bursts after the first (the pool has seen this size); "
              f"first burst: {cold_first} of {size} waited for a cold start, max "
              f"{max((ms for ms, _ in first['acquire']), default=0):.0f} ms; later: {cold_later} cold waits; "
              f"all bursts p99 {_p(every, 0.99) or 0:.1f} ms; client send -> agent started p50 "
              f"{_p(to_start, 0.5) or 0:.0f} / p99 {_p(to_start, 0.99) or 0:.0f} ms (includes the router's queue "
              f"for a slot); ready target after: {runs[-1]['target_after']}; refill "
              f"{refill or 0:.1f} agents/s while jobs waited; baseline: the old design's queue -> container "
              f"ready, every job a cold start; {REFERENCE}"),
        details={"cold_waits_first": cold_first, "cold_waits_later": cold_later, "p99_all": _p(every, 0.99),
                 "client_to_start_p50_ms": _p(to_start, 0.5), "client_to_start_p99_ms": _p(to_start, 0.99),
                 "target_after": runs[-1]["target_after"], "refill_per_s": refill,
                 "baseline_cold_waits": len(old_acquire), "reference_p50_ms": 92.0, "reference_p99_ms": 376.0})


def _told(messages: dict[str, dict]) -> dict[str, int]:
    counts = {"answered": 0, "queued_or_busy": 0, "never_told": 0, "lost": 0}
    for m in messages.values():
        counts["answered"] += m.get("kind") == "reply"
        counts["queued_or_busy"] += "queued" in m or m.get("kind") == "busy"
        counts["never_told"] += "first" not in m or m["first"] - m["sent"] > TOLD_WITHIN_S
        counts["lost"] += "final" not in m
    return counts


def overload_row(run: dict, old: list[dict], old_sent: int) -> Row:
    new = _told(run["messages"])
    old_counts = {"answered": sum(not r["error"] for r in old), "queued_or_busy": 0,  # it had no notices
                  "never_told": sum(r["replied"] - r["written"] > TOLD_WITHIN_S for r in old) + old_sent - len(old),
                  "lost": old_sent - len(old)}
    return Row(
        name="overload", unit="never told", p50=float(new["never_told"]), p99=None,
        baseline_p50=float(old_counts["never_told"]), baseline_p99=None, ratio=math.nan,
        target="0 lost; every message answered or told", met=new["lost"] == 0 and new["never_told"] == 0,
        samples=len(run["messages"]), baseline_samples=old_sent,
        note=(f"the first burst of {OVERLOAD_SIZE} new chats, container-full; warmwire: "
              + ", ".join(f"{k} {v}" for k, v in new.items()) + "; old design (5 slots, silent queue): "
              + ", ".join(f"{k} {v}" for k, v in old_counts.items())
              + f"; never told = no frame at all within {TOLD_WITHIN_S:g} s"),
        details={**new, **{f"baseline_{k}": v for k, v in old_counts.items()}})


def run(system, quick: bool, progress) -> list[Row]:
    result = bursts.drive(system, quick, progress)
    pool = result["pool"]
    old = old_design.session(quick, progress)
    old_of = {1: old["singles"], 5: old["burst_5"], 20: old["burst_20"]}
    rows = [acquisition_row(size, result[size], old_of[size], pool["pool"]["refill_per_s"]) for size in bursts.SIZES]
    rows.append(overload_row(result[OVERLOAD_SIZE][0], old["burst_20"], old["sent"]["burst_20"]))
    everything = old["singles"] + old["burst_5"] + old["burst_20"]
    old_stages, single_stages = old_design.stages(everything), old_design.stages(old["singles"])
    singles = result["pool_after_1"]  # agents started one at a time: at start and one per single chat
    cold, old_cold = singles["cold_start_p50_ms"], single_stages["cold_start"]
    rows.append(Row(
        name="cold_start", unit="ms", p50=cold, p99=singles["cold_start_p99_ms"],
        baseline_p50=_p(old_cold, 0.5), baseline_p99=_p(old_cold, 0.99), ratio=_ratio(_p(old_cold, 0.5), cold),
        target=f"p50 < {TARGET_COLD_START_P50_MS:g} ms", met=cold is not None and cold < TARGET_COLD_START_P50_MS,
        samples=singles["created"], baseline_samples=len(old_cold), baseline_distribution=old_cold,
        note=(f"create -> signed ready seen, in the live pool-manager ({pool['backend']} backend), the "
              f"{singles['created']} agents it started before the bursts of 5 (one at a time); baseline: the old "
              "design's `docker run` -> ready, its code prepared at start, one container at a time; with many "
              f"starting at once: warmwire p50 {pool['pool']['cold_start_p50_ms'] or 0:.0f} / p99 "
              f"{pool['pool']['cold_start_p99_ms'] or 0:.0f} ms over all {pool['pool']['created']} agents, "
              f"old design p50 {_p(old_stages['cold_start'], 0.5) or 0:.0f} / p99 "
              f"{_p(old_stages['cold_start'], 0.99) or 0:.0f} ms over its {len(old_stages['cold_start'])}"),
        details={"all_p50_ms": pool["pool"]["cold_start_p50_ms"], "all_p99_ms": pool["pool"]["cold_start_p99_ms"],
                 "baseline_all_p50_ms": _p(old_stages["cold_start"], 0.5),
                 "baseline_all_p99_ms": _p(old_stages["cold_start"], 0.99)}))
    jobs = live_stats(system.config, "router")["jobs"]
    store = live_stats(system.config, "store-writer")
    p50, p99, old_ipc = jobs["result_to_reply_p50_ms"], jobs["result_to_reply_p99_ms"], old_stages["ipc"]
    rows.append(Row(
        name="ipc_reply", unit="ms", p50=p50, p99=p99, baseline_p50=_p(old_ipc, 0.5), baseline_p99=_p(old_ipc, 0.99),
        ratio=_ratio(_p(old_ipc, 0.5), p50), target=f"p99 < {TARGET_IPC_REPLY_P99_MS:g} ms",
        met=p99 is not None and p99 < TARGET_IPC_REPLY_P99_MS, samples=jobs["results"],
        baseline_samples=len(old_ipc), baseline_distribution=old_ipc,
        note="agent's result file written -> reply committed and sent by the router, during the bursts above; "
             f"where the time goes, per stage p50 / p99 (mean over the slowest 1 %) ms: {_stages(jobs)}; the commit is "
             f"the store-writer's transaction (the reply waits for it; synchronous={system.config.store.synchronous}: "
             f"an fsync), p50 {store['commit_p50_ms'] or 0:.2f} / p99 {store['commit_p99_ms'] or 0:.2f} ms in the same "
             "run; baseline: the old design's result file -> seen by its 1 s polling reader (before its reply is "
             "written)",
        details={f"{name}_{key}": value for name, stage in jobs["result_stages"].items()
                 for key, value in stage.items()}))
    return rows


def _stages(jobs: dict) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {s['p50_ms'] or 0:.2f} / {s['p99_ms'] or 0:.2f} "
                     f"({s['slowest_1pct_ms'] or 0:.2f})" for name, s in jobs["result_stages"].items())
