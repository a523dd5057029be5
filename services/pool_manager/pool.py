"""The warm pool: ready agents waiting for a chat, and the agents bound to chats.

Acquiring is a hand-over: pop a ready agent, bind it to the chat, and start a replacement in
the background. A chat's follow-ups go to its own agent while the session lasts; an agent
never changes chat. Agents are retired after ``max_uses`` jobs, after a quiet
``session_idle``, on any error, or when there are more ready ones than the target for
``reap_idle``.

Warm-ahead: the pool keeps ``target()`` agents ready, not only ``min_ready`` (the floor).
The target is the most new chats that arrived within ``burst_span`` of each other over the
last ``warm_window`` seconds: a pool that has seen 20 chats start together keeps 20 ready
for a while, one that sees a chat a minute keeps the floor. It is capped by ``max_agents``
(less the agents working for a chat) and by the memory available for
``memory_per_agent_mb`` each. Agents kept for quiet chats' follow-ups give way to it, least
recently used first, as they would to a new chat: never more than ``max_agents`` are alive
(``min_ready`` above that, at most). Acquisition is timed from the call (the job's arrival) to the
agent holding the job: a hand-over at once, a cold wait when its agent becomes ready.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Callable

import psutil

from proto.config import Pool as PoolConfig
from proto.loop import EventLoop, Timer
from proto.metrics import percentile
from proto.sockets import ensure_run_dir

from .agents import Agent
from .engine import EngineCalls
from .ipc_reader import IpcReader
from .workspaces import Workspaces

log = logging.getLogger(__name__)

SAMPLES_KEPT = 1000           # acquire and cold-start times kept for status percentiles
START_RETRY_DELAY = 2.0       # after an agent failed to start, before starting another
ARRIVALS_KEPT = 10_000        # new-chat arrival times kept for the warm-ahead target
ACQUIRE_RECENT = 64           # the latest acquisitions in status: [ms, waited for a cold start]
MB = 1 << 20


class WarmPool:
    def __init__(self, config: PoolConfig, backend, reader: IpcReader, loop: EventLoop,
                 agents_dir: Path, name_prefix: str, workspaces: Workspaces,
                 on_ready: Callable[[Agent], None], on_lost: Callable[[Agent, str], None]) -> None:
        self.config = config
        self.workspaces = workspaces
        self.backend = backend
        self.reader = reader
        self.loop = loop
        self.agents_dir = agents_dir
        self.name_prefix = name_prefix
        self.on_ready = on_ready
        self.on_lost = on_lost
        self.numbers = itertools.count(1)
        self.agents: dict[str, Agent] = {}
        self.ready: deque[Agent] = deque()
        self.sessions: dict[str, Agent] = {}
        self.acquire_ms: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.acquire_recent: deque[list] = deque(maxlen=ACQUIRE_RECENT)
        self.cold_start_ms: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.arrivals: deque[float] = deque(maxlen=ARRIVALS_KEPT)
        self.cold_waiting: dict[str, float] = {}  # agent id -> when its chat began to wait
        self.waiting_since: float | None = None    # some job has waited for a cold start since
        self.waiting_s = 0.0                       # total time jobs were waiting for agents
        self.counts = {"acquisitions": 0, "cold_starts": 0, "created": 0, "retired": 0,
                       "start_failures": 0, "lost": 0, "ready_while_waiting": 0}
        self.reap_timer: Timer | None = None
        self.engine = EngineCalls(loop, config.engine_calls)
        self.removing = 0
        self.stopping = False
        self.on_stopped: Callable[[], None] | None = None

    # -- creating ----------------------------------------------------------------------
    def start(self) -> None:
        # A killed pool-manager's agents may still hold workspaces: those come back first.
        recovered = self.workspaces.recover(self.agents_dir)
        if recovered:
            log.warning("gave back %d workspaces that agents of an earlier run still held", recovered)
        ensure_run_dir(self.agents_dir)  # every agent's key and IPC files: owner-only
        left = self.backend.remove_leftovers()
        if left:
            log.warning("removing %d agent containers left by an earlier run", left)
        self.fill()

    def _unassigned_warming(self) -> int:
        return sum(1 for a in self.agents.values() if a.state == "warming" and a.chat is None)

    def target(self) -> int:
        """How many agents to keep ready now (see the module's docstring)."""
        now = time.monotonic()
        while self.arrivals and now - self.arrivals[0] > self.config.warm_window:
            self.arrivals.popleft()
        peak, first = 0, 0
        for last, at in enumerate(self.arrivals):  # the most arrivals within burst_span
            while at - self.arrivals[first] > self.config.burst_span:
                first += 1
            peak = max(peak, last - first + 1)
        working = sum(1 for a in self.agents.values() if a.job is not None or a.backlog)
        by_memory = psutil.virtual_memory().available // (self.config.memory_per_agent_mb * MB)
        cap = min(self.config.max_agents - working, by_memory)
        return max(self.config.min_ready, min(peak, cap))

    def fill(self, keep: Agent | None = None) -> None:
        """Start agents until target() are ready or on their way (``keep``: an agent just
        handed to a chat, whose job is on its way: never displaced)."""
        if self.stopping:
            return
        on_the_way = len(self.ready) + self._unassigned_warming()
        wanted = self.target() - on_the_way
        if wanted <= 0:
            return
        self._displace_idle(len(self.agents) + wanted - self.config.max_agents, keep)
        room = max(self.config.max_agents - len(self.agents), self.config.min_ready - on_the_way)
        for _ in range(min(wanted, room)):
            self.create()

    def create(self, chat: str | None = None) -> Agent:
        agent_id = f"{self.name_prefix}-{next(self.numbers)}"
        agent = Agent(agent_id, self.agents_dir / agent_id, self.backend.agent_owner)
        self.workspaces.prepare(agent.layout.root)
        if chat is not None:
            self._bind(agent, chat)
        self.agents[agent_id] = agent
        self.reader.watch(agent)  # before the start, so `ready` cannot be missed
        self.counts["created"] += 1
        agent.starting = True
        self.engine.submit(lambda: self.backend.start(agent), lambda _, error: self._started(agent, error))
        return agent

    def _started(self, agent: Agent, error: BaseException | None) -> None:
        agent.starting = False
        if agent.state == "retired":
            # Retired while its start was under way (e.g. warmwire is stopping): remove what
            # the start made now, or the container would outlive the pool.
            self._remove(agent)
            return
        if error is not None:
            self.counts["start_failures"] += 1
            log.error("could not start agent %s: %s", agent.id, error)
            self.retire(agent, "start failed", refill=False)
            self.on_lost(agent, f"could not start an agent: {error}")
            self.loop.call_later(START_RETRY_DELAY, self.fill)
            return
        self.backend.watch(agent)
        agent.ready_timer = self.loop.call_later(self.config.ready_timeout, lambda: self._check_ready(agent))

    def _check_ready(self, agent: Agent) -> None:
        if agent.state == "warming":
            log.error("agent %s not ready %g s after start; replacing it", agent.id, self.config.ready_timeout)
            self.retire(agent, "not ready")
            self.on_lost(agent, "the agent did not become ready")

    def agent_ready(self, agent: Agent) -> None:
        """Its `ready` file arrived: hand it to its waiting chat, or to the ready queue."""
        if agent.state != "warming":
            return
        if agent.ready_timer is not None:
            agent.ready_timer.cancel()
        agent.ready_at = time.monotonic()
        self.cold_start_ms.append((agent.ready_at - agent.created) * 1000)
        if self.cold_waiting:
            self.counts["ready_while_waiting"] += 1
        if agent.chat is None:
            agent.state = "ready"
            self.ready.append(agent)
            if len(self.ready) > self.config.min_ready:  # only a surplus is ever reaped
                self._arm_reaper()
        else:
            agent.state = "idle"
            waited = self.cold_waiting.pop(agent.id, None)
            if waited is not None:
                self._acquired((time.perf_counter() - waited) * 1000, cold=True)
            self.on_ready(agent)

    # -- handing out -------------------------------------------------------------------
    def acquire(self, chat: str) -> Agent:
        """The chat's agent: its session, a ready one (a hand-over), or one still starting
        (cold): the oldest unassigned one already on its way (``agents`` keeps creation
        order), else a new one."""
        started = time.perf_counter()
        agent = self.sessions.get(chat)
        if agent is None:
            if self.ready:
                agent = self.ready.popleft()
                self._bind(agent, chat)
                agent.state = "idle"
                self._acquired((time.perf_counter() - started) * 1000, cold=False)
            else:  # a cold wait: for the agent whose start is furthest along, else a new one
                agent = next((a for a in self.agents.values() if a.state == "warming" and a.chat is None), None)
                if agent is None:
                    agent = self.create(chat)
                else:
                    self._bind(agent, chat)
                self.counts["cold_starts"] += 1
                self._wait_begins(agent, started)
            self.arrivals.append(time.monotonic())
            self.sessions[chat] = agent
            self._make_room(keep=agent)  # after the hand-over: housekeeping, not acquiring
            self.fill(keep=agent)
        return agent

    def _bind(self, agent: Agent, chat: str) -> None:
        """The agent serves this chat from now on, in the chat's workspace."""
        agent.bind(chat)
        try:
            agent.workspace = self.workspaces.lend(chat, agent.layout.root)
        except OSError as exc:  # the job still runs, without tools
            log.error("could not lend chat %s's workspace to agent %s: %s", chat, agent.id, exc)

    def _acquired(self, ms: float, cold: bool) -> None:
        self.counts["acquisitions"] += 1
        self.acquire_ms.append(ms)
        self.acquire_recent.append([round(ms, 3), int(cold)])
        if cold and not self.cold_waiting and self.waiting_since is not None:
            self.waiting_s += time.perf_counter() - self.waiting_since
            self.waiting_since = None

    def _wait_begins(self, agent: Agent, started: float) -> None:
        if not self.cold_waiting:
            self.waiting_since = started
        self.cold_waiting[agent.id] = started

    def _make_room(self, keep: Agent) -> None:
        """Keep at most max_agents: a new chat's agent (``keep``) displaces the least recently
        used idle session (busy ones are never cut short)."""
        self._displace_idle(len(self.agents) - self.config.max_agents, keep)

    def _displace_idle(self, count: int, keep: Agent | None = None) -> None:
        """Retire up to ``count`` agents kept for quiet chats, least recently used first."""
        idle = sorted((a for a in self.sessions.values()
                       if a is not keep and a.state == "idle" and a.job is None and not a.backlog),
                      key=lambda a: a.last_used)
        for agent in idle[:max(count, 0)]:
            self.retire(agent, "making room for new chats", refill=False)

    def release(self, agent: Agent) -> None:
        """A job finished well: keep the agent for its chat, unless it has served enough."""
        agent.uses += 1
        agent.last_used = time.monotonic()
        if agent.uses >= self.config.max_uses:
            self.retire(agent, f"served {agent.uses} jobs")
        else:
            agent.state = "idle"
            self._arm_reaper()

    # -- retiring ----------------------------------------------------------------------
    def retire(self, agent: Agent, why: str, refill: bool = True) -> None:
        if agent.state == "retired":
            return
        log.info("retiring agent %s (%s)", agent.id, why)
        if agent.state == "ready":
            self.ready.remove(agent)
        agent.state = "retired"
        self.counts["retired"] += 1
        if self.cold_waiting.pop(agent.id, None) is not None and not self.cold_waiting:
            self.waiting_s += time.perf_counter() - self.waiting_since
            self.waiting_since = None
        if agent.chat is not None and self.sessions.get(agent.chat) is agent:
            del self.sessions[agent.chat]
        # Now, in the loop: the chat's next agent may be bound before this one is removed.
        try:
            self.workspaces.give_back(agent.layout.root)
        except OSError as exc:
            log.error("could not give back the workspace agent %s held: %s (kept in its folder)", agent.id, exc)
            agent.keep_files = True
        self.reader.unwatch(agent)
        self.agents.pop(agent.id, None)
        self.removing += 1
        if not agent.starting:  # else _started removes it once the start returns
            self._remove(agent)
        if refill:
            self.fill()

    def _remove(self, agent: Agent) -> None:
        def remove() -> None:  # in a worker: a flooded IPC area takes a while to delete
            self.backend.stop(agent)
            agent.discard_files()
        self.engine.submit(remove, lambda *_: self._removed(agent))

    def _removed(self, agent: Agent) -> None:
        self.removing -= 1
        if self.stopping and not self.removing and self.on_stopped is not None:
            done, self.on_stopped = self.on_stopped, None
            done()

    def agent_exited(self, agent_id: str, why: str = "exited") -> None:
        """The backend saw an agent exit, or run out of memory or processes, and we did not
        retire it: replace it."""
        agent = self.agents.get(agent_id)
        if agent is None or agent.state == "retired":
            return
        self.counts["lost"] += 1
        never_ready = agent.state == "warming"
        log.warning("agent %s %s unexpectedly%s; replacing it", agent_id, why,
                    " before it was ready" if never_ready else "")
        # An agent that dies at start would die again at once: wait before the next one.
        self.retire(agent, why, refill=not never_ready)
        if never_ready:
            self.loop.call_later(START_RETRY_DELAY, self.fill)
        self.on_lost(agent, "the agent stopped")

    def _arm_reaper(self) -> None:
        if self.reap_timer is None:
            self.reap_timer = self.loop.call_later(min(self.config.reap_idle, self.config.session_idle), self._reap)

    def _reap(self) -> None:
        """Retire quiet sessions and surplus ready agents; re-arm only while any remain."""
        self.reap_timer = None
        now = time.monotonic()
        for agent in list(self.sessions.values()):
            if agent.state == "idle" and not agent.backlog and now - agent.last_used > self.config.session_idle:
                self.retire(agent, "session ended", refill=False)
        target = self.target()
        while len(self.ready) > target and now - self.ready[0].ready_at > self.config.reap_idle:
            self.retire(self.ready[0], "surplus ready agent", refill=False)
        if self.sessions or len(self.ready) > self.config.min_ready:
            self._arm_reaper()

    def stop(self, done: Callable[[], None]) -> None:
        """Remove every agent; done() once all are gone."""
        self.stopping = True
        self.on_stopped = done
        for agent in list(self.agents.values()):
            self.retire(agent, "warmwire is stopping", refill=False)
        if not self.removing:
            self.on_stopped = None
            done()

    def stats(self) -> dict:
        states = {"warming": 0, "ready": 0, "idle": 0, "busy": 0}
        for agent in self.agents.values():
            states[agent.state] = states.get(agent.state, 0) + 1
        acquire_avg = sum(self.acquire_ms) / len(self.acquire_ms) if self.acquire_ms else None
        waiting_s = self.waiting_s + (time.perf_counter() - self.waiting_since if self.waiting_since else 0.0)
        return {**states, "sessions": len(self.sessions), **self.counts, "target_ready": self.target(),
                "waiting_s": round(waiting_s, 3),
                "refill_per_s": self.counts["ready_while_waiting"] / waiting_s if waiting_s else None,
                "acquire_recent": list(self.acquire_recent), "engine_calls": self.engine.stats(),
                "agents": {agent.id: agent.state for agent in self.agents.values()},
                "acquire_avg_ms": acquire_avg, "acquire_p50_ms": percentile(self.acquire_ms, 0.5),
                "acquire_p99_ms": percentile(self.acquire_ms, 0.99),
                "cold_start_p50_ms": percentile(self.cold_start_ms, 0.5),
                "cold_start_p99_ms": percentile(self.cold_start_ms, 0.99)}


def agent_name_prefix(home_label: str) -> str:
    """Container names are unique per engine: this home, this pool-manager process."""
    return f"ww-{home_label}-{os.getpid()}"
