"""How many agents may run jobs at once, from measured load (psutil).

limit = running + the agents that still fit in idle CPU and in available memory, clamped to
[1, max_concurrency]. Running agents are added back because their own load is part of what
is measured. Evaluated before each start and, while jobs run, every ``load_interval``.
"""

from __future__ import annotations

import psutil

MB = 1 << 20
PERCENT = 100.0


class ConcurrencyLimit:
    def __init__(self, max_concurrency: int, cpu_per_agent: float, memory_per_agent_mb: int) -> None:
        self.max_concurrency = max_concurrency
        self.cpu_per_agent = cpu_per_agent
        self.memory_per_agent = memory_per_agent_mb * MB
        self.cores = psutil.cpu_count() or 1
        self.limit = max_concurrency
        self.measured = {}
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def evaluate(self, running: int) -> int:
        busy = psutil.cpu_percent(interval=None) / PERCENT
        available = psutil.virtual_memory().available
        idle_cores = self.cores * (1.0 - busy)
        by_cpu = running + int(idle_cores / self.cpu_per_agent)
        by_memory = running + int(available / self.memory_per_agent)
        self.limit = max(1, min(self.max_concurrency, by_cpu, by_memory))
        self.measured = {"cpu_busy": round(busy, 2), "idle_cores": round(idle_cores, 2),
                         "available_mb": available // MB, "by_cpu": by_cpu, "by_memory": by_memory}
        return self.limit
