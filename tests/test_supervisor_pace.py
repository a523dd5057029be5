"""The supervisor's probe pace: fast while work flows, rare while idle, and a service that
hangs while idle is still replaced (supervisor/pace.py)."""

from __future__ import annotations

import os
import signal
import time

from conftest import Warmwire, wait_for
from supervisor.pace import QUIET_ROUNDS, ProbePace, traffic

FAST, IDLE = 0.2, 3.0


def test_the_pace_slows_after_quiet_rounds_and_comes_back_at_once():
    pace = ProbePace(FAST, IDLE)
    same = traffic([("router", {"messages": 1})])
    assert [pace.next_interval(same, True) for _ in range(QUIET_ROUNDS + 1)][-1] == IDLE
    assert pace.next_interval(traffic([("router", {"messages": 2})]), True) == FAST  # traffic
    for _ in range(QUIET_ROUNDS + 1):
        pace.next_interval(same, True)
    assert pace.next_interval(same, False) == FAST  # a probe went unanswered
    assert pace.next_interval(same, True) == FAST  # and it takes quiet rounds again to slow down
    pace.wake()
    assert pace.interval == FAST
    # uptime or a latency window that moves by itself is not traffic
    assert traffic([("router", {"messages": 1, "uptime": 5.0})]) == traffic([("router", {"messages": 1, "uptime": 9.0})])
    # nor the pool-manager's own fallback sweep; a file from an agent is
    swept = {"ipc": {"files": 4, "sweeps": 2}}
    assert traffic([("pool-manager", swept)]) == traffic([("pool-manager", {"ipc": {"files": 4, "sweeps": 3}})])
    assert traffic([("pool-manager", swept)]) != traffic([("pool-manager", {"ipc": {"files": 5, "sweeps": 2}})])


def _pid_of(system: Warmwire, name: str) -> int:
    return system.service(name)["pid"]


def test_an_idle_warmwire_is_probed_rarely_and_a_service_hung_while_idle_is_replaced(home, make_env):
    system = Warmwire(home, make_env(WARMWIRE_SUPERVISOR_PROBE_INTERVAL=str(FAST),
                                     WARMWIRE_SUPERVISOR_IDLE_PROBE_INTERVAL=str(IDLE)))
    system.start()
    try:
        assert system.client().ask("hi")["tier"] == "inline"
        frozen = _pid_of(system, "search-cache")
        # Each status request brings the fast pace back for QUIET_ROUNDS rounds; asked less
        # often than that, an idle warmwire is seen at its idle pace.
        wait_for(lambda: system.status()["supervisor"]["probe_interval"] == IDLE, 60,
                 "the supervisor to slow to its idle pace", interval=(QUIET_ROUNDS + 2) * FAST)
        # Let it go idle again, then freeze a service without asking anything (a status
        # request would bring the fast pace back by itself).
        time.sleep((QUIET_ROUNDS + 1) * FAST + 0.5)
        log_size = len(system.logs())
        os.kill(frozen, signal.SIGSTOP)
        wait_for(lambda: "search-cache is unresponsive" in system.logs()[log_size:], IDLE + 10 * FAST + 5,
                 "the frozen search-cache to be found out at the idle pace")
        wait_for(lambda: system.healthy() and _pid_of(system, "search-cache") != frozen, 30,
                 "the frozen search-cache to be replaced")
        assert system.client().ask("thanks")["tier"] == "inline"
    finally:
        system.stop()
