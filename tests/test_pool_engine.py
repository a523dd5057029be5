"""Container starts and removals run at most pool.engine_calls at a time, in order, and a
failed call neither stops the ones behind it nor leaks its place (services/pool_manager/engine.py)."""

from __future__ import annotations

import threading

from proto.loop import EventLoop
from services.pool_manager.engine import EngineCalls

DEADLINE_S = 30.0  # a hang guard only


def _run(limit: int, calls: int, failing: set[int] = frozenset()) -> tuple[int, list]:
    loop = EventLoop()
    engine = EngineCalls(loop, limit)
    lock = threading.Lock()
    running, most, done = [0], [0], []

    def work(number: int):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        threading.Event().wait(0.01)  # a blocking engine call holds its worker
        with lock:
            running[0] -= 1
        if number in failing:
            raise RuntimeError("the engine refused")
        return number

    def finished(number: int, result, error) -> None:
        done.append((number, result, type(error).__name__ if error else None))
        if len(done) == calls:
            loop.stop()

    for number in range(calls):
        engine.submit(lambda number=number: work(number), lambda r, e, number=number: finished(number, r, e))
    guard = loop.call_later(DEADLINE_S, loop.stop)
    loop.run()
    guard.cancel()
    loop.close()
    assert len(done) == calls, f"engine calls hung: {len(done)} of {calls} finished"
    assert engine.stats() == {"running": 0, "waiting": 0, "limit": limit}
    return most[0], done


def test_one_at_a_time_in_the_order_asked():
    most, done = _run(limit=1, calls=6)
    assert most == 1
    assert [number for number, _, _ in done] == list(range(6))


def test_a_failed_call_is_reported_and_the_rest_go_on():
    most, done = _run(limit=1, calls=4, failing={1})
    assert done[1] == (1, None, "RuntimeError")
    assert [result for _, result, _ in done] == [0, None, 2, 3]


def test_a_higher_limit_runs_calls_side_by_side():
    most, _ = _run(limit=3, calls=9)
    assert 1 < most <= 3
