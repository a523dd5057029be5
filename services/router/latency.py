"""How long the router takes to answer: message in (frame read) to answer out (frame sent).

Two views, both cheap on the message path (a clock read and a dict entry per message):
- the last minute, for the dashboard: per second a sparse histogram of fine logarithmic
  buckets (``router.latency_precision`` relative width), so p50 and p99 over the minute and
  per second cost a few dozen additions at each probe, never a sort of every sample;
- since start, per tier, a cumulative histogram over ``router.latency_buckets`` (seconds), the
  shape Prometheus expects (``/metrics`` of the web service).
Only replies are timed; a refusal or error stops the clock without a sample.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import Counter, deque
from typing import Any

from proto.config import Router as RouterConfig
from proto.frames import Notice, Reply

# Answers faster than this count as this fast (the finest bucket's lower edge).
FLOOR_S = 1e-6
# Notices after which more frames follow for the same message: the clock keeps running.
INTERIM = ("queued", "progress", "delta")


def _quantile(counts: Counter[int], total: int, fraction: float) -> int:
    """The bucket holding the nearest-rank quantile."""
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for key in sorted(counts):
        seen += counts[key]
        if seen >= rank:
            return key
    return max(counts)


class LatencyMeter:
    def __init__(self, config: RouterConfig, tiers: tuple[str, ...]) -> None:
        self.window = config.latency_window
        self.slot = config.latency_slot
        self.log_base = math.log1p(config.latency_precision)
        self.bounds = list(config.latency_buckets)
        self.started: dict[str, float] = {}
        # (slot number, fine bucket -> count) for the slots of the last window, oldest first.
        self.slots: deque[tuple[int, Counter[int]]] = deque()
        self.summaries: dict[int, list[float]] = {}  # closed slot -> [p50 ms, p99 ms, count]
        self.window_counts: Counter[int] = Counter()  # the slots above, summed as they come
        self.buckets = {tier: [0] * (len(self.bounds) + 1) for tier in tiers}
        self.sums = dict.fromkeys(tiers, 0.0)

    def arrived(self, message_id: str) -> None:
        self.started[message_id] = time.perf_counter()

    def sent(self, frame: Any) -> None:
        """Every frame the router sends to a client passes here."""
        if isinstance(frame, Reply):
            start = self.started.pop(frame.id, None)
            if start is not None:
                self._record(frame.tier, time.perf_counter() - start)
        elif isinstance(frame, Notice) and frame.kind not in INTERIM:
            self.started.pop(frame.id, None)

    def _record(self, tier: str, seconds: float) -> None:
        self.buckets[tier][bisect_left(self.bounds, seconds)] += 1
        self.sums[tier] += seconds
        number = int(time.monotonic() // self.slot)
        if not self.slots or self.slots[-1][0] != number:
            self.slots.append((number, Counter()))
        key = int(math.log(max(seconds, FLOOR_S) / FLOOR_S) / self.log_base)
        self.slots[-1][1][key] += 1
        self.window_counts[key] += 1

    def _ms(self, key: int) -> float:
        """A fine bucket's geometric middle, in ms."""
        return round(FLOOR_S * math.exp((key + 0.5) * self.log_base) * 1000, 4)

    def _summary(self, counts: Counter[int]) -> list[float]:
        total = sum(counts.values())
        return [self._ms(_quantile(counts, total, 0.5)), self._ms(_quantile(counts, total, 0.99)), total]

    def stats(self) -> dict[str, Any]:
        """p50/p99 over the window and per slot (for the dashboard's charts), and the
        cumulative histograms (for Prometheus)."""
        now = int(time.monotonic() // self.slot)
        oldest = now - int(self.window / self.slot)
        while self.slots and self.slots[0][0] <= oldest:
            number, counts = self.slots.popleft()
            self.summaries.pop(number, None)
            for key, count in counts.items():
                left = self.window_counts[key] - count
                if left:
                    self.window_counts[key] = left
                else:
                    del self.window_counts[key]
        merged = self.window_counts
        series = []
        wall = time.time()
        for number, counts in self.slots:
            summary = self.summaries.get(number)
            if summary is None:
                summary = self._summary(counts)
                if number != now:  # a closed slot no longer changes
                    self.summaries[number] = summary
            series.append([round(wall - (now - number) * self.slot, 1), *summary])
        minute = self._summary(merged) if merged else [None, None, 0]
        return {
            "latency": {"window_s": self.window, "p50_ms": minute[0], "p99_ms": minute[1], "count": minute[2]},
            "latency_series": series,
            "latency_histogram": {"le": self.bounds, "buckets": self.buckets, "sum_s": self.sums},
        }
