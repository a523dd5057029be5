"""How often the supervisor probes: every ``probe_interval`` while work flows, every
``idle_probe_interval`` once QUIET_ROUNDS rounds in a row saw no traffic.

A process that exits is seen at once without any probe (SIGCHLD wakes the supervisor's loop);
probes exist only to catch a service that is alive but hung. While nobody writes, a hang
harms no one until the next message, so probing every second then is only wake-ups for every
service on an idle machine. The trade-off: a service that hangs while warmwire is idle is
noticed up to ``idle_probe_interval`` later (then within ``missed_probes`` fast probes, since
an unanswered probe brings the fast pace back at once); a status request (``./run.sh status``,
the dashboard) also brings it back, and its answer's stats are then at most one fast probe old.

Traffic is read from the probe answers themselves (no extra wake-up): the counters of the
services that clients talk to, which change only when a request, message or job comes or goes.
"""

from __future__ import annotations

from typing import Any, Iterable

# Per service, the stats that move only with client traffic (never by themselves, unlike
# uptime, latency windows that expire, or load readings). A dotted key names a counter inside
# a dict: the pool-manager's IPC files count, but not its sweeps, the fallback sweep that
# runs by itself every sweep_interval (counting it brought the fast pace back after each).
TRAFFIC_STATS = {
    "router": ("messages", "pending_writes", "jobs", "knowledge", "history_requests", "learn_requests",
               "search_requests", "refused_requests", "busy", "bad_frames", "resends_answered"),
    "search-cache": ("documents", "cache_hits", "cache_misses", "unindexed", "pending_writes"),
    "pool-manager": ("active_jobs", "model_turns_waiting", "ipc.files", "ipc.rejected", "ipc.overflows"),
}
# Fast rounds in a row with no traffic before the idle pace: a pause between two messages of
# a conversation is not idleness.
QUIET_ROUNDS = 3


def traffic(stats_by_service: Iterable[tuple[str, dict[str, Any]]]) -> tuple:
    """A fingerprint of the traffic counters in the services' latest probe answers."""
    return tuple((name, key, repr(_counter(stats, key))) for name, stats in stats_by_service
                 for key in TRAFFIC_STATS.get(name, ()))


def _counter(stats: dict[str, Any], key: str) -> Any:
    outer, _, inner = key.partition(".")
    value = stats.get(outer)
    return value.get(inner) if inner and isinstance(value, dict) else value


class ProbePace:
    def __init__(self, fast: float, idle: float) -> None:
        self.fast = fast
        self.idle = max(idle, fast)
        self.interval = fast
        self.last: tuple | None = None
        self.quiet = 0

    def next_interval(self, fingerprint: tuple, all_answered: bool) -> float:
        """The wait before the next round, given what the last one saw: the fast pace when
        traffic moved or a probe went unanswered, the idle pace after QUIET_ROUNDS quiet ones."""
        self.quiet = self.quiet + 1 if fingerprint == self.last and all_answered else 0
        self.interval = self.idle if self.quiet >= QUIET_ROUNDS else self.fast
        self.last = fingerprint
        return self.interval

    def wake(self) -> None:
        """Someone asked about warmwire: back to the fast pace from the next round."""
        self.interval = self.fast
        self.last = None
        self.quiet = 0
