"""pool-manager: warm agent containers (issue 5). For now it only answers health probes, so
the supervisor can already run, probe and restart it."""

from __future__ import annotations

from typing import Any, Callable


class PoolManager:
    def __init__(self) -> None:
        self.state = "serving"

    def stats(self) -> dict[str, Any]:
        return {"available": False}

    def drain(self, done: Callable[[], None]) -> None:
        self.state = "draining"
        done()
