"""The pool's warm-ahead target (services/pool_manager/pool.py): min_ready is the floor, a
burst of new chats raises the target to its size for warm_window, capped by max_agents."""

from __future__ import annotations

import time
from pathlib import Path

from proto.config import load
from services.pool_manager.pool import WarmPool


def pool(**settings: str) -> WarmPool:
    env = {f"WARMWIRE_POOL_{key.upper()}": value for key, value in settings.items()}
    return WarmPool(load(env).pool, backend=None, reader=None, loop=None, agents_dir=Path("/nonexistent"),
                    name_prefix="test", workspaces=None, on_ready=lambda agent: None,
                    on_lost=lambda agent, why: None)


def test_with_no_new_chats_the_target_is_min_ready():
    assert pool().target() == 1
    assert pool(min_ready="3").target() == 3


def test_a_burst_of_new_chats_raises_the_target_to_its_size():
    warm = pool()
    now = time.monotonic()
    warm.arrivals.extend([now - 0.1] * 5)
    assert warm.target() == 5


def test_chats_arriving_far_apart_keep_the_floor():
    warm = pool(burst_span="2")
    now = time.monotonic()
    warm.arrivals.extend(now - 10 * n for n in range(5, 0, -1))
    assert warm.target() == 1


def test_a_burst_older_than_the_window_is_forgotten():
    warm = pool(warm_window="60")
    warm.arrivals.extend([time.monotonic() - 61] * 8)
    assert warm.target() == 1
    assert not warm.arrivals


def test_the_target_never_exceeds_max_agents():
    warm = pool(max_agents="16")
    warm.arrivals.extend([time.monotonic()] * 40)
    assert warm.target() == 16
