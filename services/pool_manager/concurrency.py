"""How many agents may run jobs at once, from what agents spend.

Three inputs, each a limit on the number of jobs running at once; the smallest wins, clamped
to [1, max_concurrency]:

- **memory**: running + the agents that still fit in available memory (psutil), an agent
  counted at what the agents alive now use on average (their containers' own memory
  counters; ``memory_per_agent_mb`` until one has been measured);
- **provider calls**: with a model provider, each job holds at most one call at a time, and
  the gateway makes ``gateway.max_in_flight`` at once, so more jobs would only wait there;
- **CPU**: only for jobs that use it — that run tools, or the offline agent's answer. A job
  waiting for a model turn uses none, so while every running job waits on the model, CPU
  does not limit (running + the agents that fit in idle cores, ``cpu_per_agent`` each).

Running jobs are added back because their own load is part of what is measured. Evaluated
before each start and, while jobs run, every ``load_interval``; ``status`` shows each input.
"""

from __future__ import annotations

import psutil

MB = 1 << 20
PERCENT = 100.0


class ConcurrencyLimit:
    def __init__(self, max_concurrency: int, cpu_per_agent: float, memory_per_agent_mb: int,
                 provider_calls: int | None = None) -> None:
        """provider_calls: the gateway's calls in flight at once (None: no provider)."""
        self.max_concurrency = max_concurrency
        self.cpu_per_agent = cpu_per_agent
        self.memory_per_agent = memory_per_agent_mb * MB
        self.provider_calls = provider_calls
        self.cores = psutil.cpu_count() or 1
        self.limit = max_concurrency
        self.measured: dict = {}
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def evaluate(self, running: int, waiting_on_model: int = 0, agent_memory: list[int] | None = None) -> int:
        """running: jobs running; waiting_on_model: those of them waiting for a model turn;
        agent_memory: bytes used by each agent alive now (measured by the backend)."""
        measured = [m for m in agent_memory or [] if m > 0]
        per_agent = sum(measured) / len(measured) if measured else self.memory_per_agent
        available = psutil.virtual_memory().available
        by_memory = running + int(available / max(per_agent, 1))
        by_provider = self.provider_calls
        cpu_jobs = max(0, running - waiting_on_model) if self.provider_calls is not None else running
        busy = psutil.cpu_percent(interval=None) / PERCENT
        idle_cores = self.cores * (1.0 - busy)
        # With a provider, a new job starts by waiting on the model: CPU limits only while
        # some job uses it.
        by_cpu = running + int(idle_cores / self.cpu_per_agent) \
            if (self.provider_calls is None or cpu_jobs) else None
        limits = [x for x in (by_memory, by_provider, by_cpu) if x is not None]
        self.limit = max(1, min(self.max_concurrency, *limits))
        self.measured = {
            "memory": {"available_mb": available // MB, "per_agent_mb": round(per_agent / MB, 1),
                       "agents_measured": len(measured), "limit": by_memory},
            "provider_calls": {"waiting_on_model": waiting_on_model, "max_in_flight": by_provider,
                               "limit": by_provider},
            "cpu": {"jobs_using_cpu": cpu_jobs, "busy": round(busy, 2), "idle_cores": round(idle_cores, 2),
                    "limit": by_cpu},
        }
        return self.limit
