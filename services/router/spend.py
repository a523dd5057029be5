"""Today's agent spend as the router reports it: in `status` and in the /cost command."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Callable

from proto.config import Config
from proto.db import spend_since, tokens_by_model_since


def midnight() -> float:
    """Today's start, local time: budgets and /cost count per local day."""
    return datetime.combine(datetime.now().date(), datetime.min.time()).timestamp()


class Spend:
    """``read(query, default)``: a query on the database, or ``default`` when it cannot be read."""

    def __init__(self, config: Config, read: Callable[[Callable, Any], Any]) -> None:
        self.refresh = config.router.spend_refresh
        self.budget = config.agents.daily_budget_usd
        self.prices = config.prices
        self.read = read
        self.last: dict[str, Any] = {}
        self.read_at = float("-inf")

    def today(self) -> tuple[int, int, float]:
        """(agent jobs, tokens, cost in USD) since midnight."""
        return self.read(lambda db: spend_since(db, midnight()), (0, 0, 0.0))

    def unpriced_today(self) -> dict[str, int]:
        """Today's tokens per model that has no price in [prices] (its cost is unknown)."""
        tokens = self.read(lambda db: tokens_by_model_since(db, midnight()), {})
        return {model: count for model, count in tokens.items() if model not in self.prices and count}

    def stats(self) -> dict[str, Any]:
        """Today's agent jobs, tokens and cost against the daily budget (read again at most
        every ``router.spend_refresh`` s: this runs at every probe)."""
        now = time.monotonic()
        if now - self.read_at >= self.refresh:
            jobs, tokens, cost = self.today()
            self.last = {"jobs": jobs, "tokens": tokens, "cost_usd": round(cost, 6), "budget_usd": self.budget}
            self.read_at = now
        return self.last
