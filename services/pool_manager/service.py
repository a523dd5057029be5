"""pool-manager: runs container-tier jobs on warm agents, and answers the router.

Backpressure: a job is read from the router's socket only while fewer jobs are active than
the concurrency limit allows. Otherwise the socket is left unread, its small high-water mark
fills, and the router's non-blocking send fails at once — which is how the router learns to
queue and tell the user.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import msgspec
import zmq

from proto import ipc
from proto.config import Config
from proto.frames import (
    Codec, Job, JobProgress, JobResult, PoolIn, PoolOut, SaveJob, SaveUsage, Slots, shorten,
)
from proto.loop import EventLoop, Timer
from proto.store_client import StoreClient

from .agents import ActiveJob, Agent
from .concurrency import ConcurrencyLimit
from .ipc_reader import IpcReader
from .pool import WarmPool
from .turns import ModelTurns
from .workspaces import Workspaces

log = logging.getLogger(__name__)

# A job is tried on a second agent when its first one is lost mid-job; then it fails.
MAX_ATTEMPTS = 2
PER_MILLION = 1_000_000
# Token counts an agent reports are believed only within this range (SQLite's integers).
MAX_TOKENS = 2 ** 63 - 1
# An agent's error or progress text reaches log lines and users: one line, this long at most.
AGENT_NOTE_CHARS = 300
# The agent's record of its tool calls, kept with the reply: bounded here too (its word).
MAX_TOOL_LOG_CHARS = 4000
RUN_TOOL = "run"


def _agent_note(value: object) -> str:
    return shorten(" ".join(str(value).split()), AGENT_NOTE_CHARS)


def _tokens(usage: dict, *names: str) -> int:
    """A token count from an agent's usage report: the first plausible one, else 0."""
    for name in names:
        value = usage.get(name)
        if type(value) is int and 0 < value <= MAX_TOKENS:
            return value
    return 0


class PoolManager:
    def __init__(self, config: Config, socket: zmq.Socket, storage_socket: zmq.Socket,
                 loop: EventLoop, backend, backend_note: str, name_prefix: str,
                 gateway_socket: zmq.Socket | None = None) -> None:
        self.config = config
        self.socket = socket
        self.loop = loop
        self.backend = backend
        self.backend_note = backend_note
        self.codec = Codec(PoolIn)
        self.out = Codec(PoolOut)
        self.reader = IpcReader(loop, config.pool.sweep_interval, config.pool.max_agent_files,
                                self._on_agent_message, self._on_rejected, self._check_limits)
        self.pool = WarmPool(config.pool, backend, self.reader, loop, config.home / "agents", name_prefix,
                             Workspaces(config.home / "workspaces", backend.agent_owner, lend=backend.name != "local"),
                             self._on_agent_ready, self._on_agent_lost)
        self.limit = ConcurrencyLimit(
            config.pool.max_concurrency, config.pool.cpu_per_agent, config.pool.memory_per_agent_mb,
            config.gateway.max_in_flight if config.agents.provider != "offline" and gateway_socket else None)
        self.storage = StoreClient(storage_socket, loop, config.router.store_ack_timeout,
                                   lambda key: None, self._on_store_failed)
        self.jobs: dict[str, ActiveJob] = {}
        self.turns = (ModelTurns(config, gateway_socket, loop, self.jobs, self._send,
                                 lambda active, error: self._finish(active, error=error))
                      if gateway_socket is not None else None)
        self.router_peer: bytes | None = None  # who sends jobs: told when the limit changes
        self.reading = False
        self.load_timer: Timer | None = None
        self.state = "serving"
        self.counts = {"jobs": 0, "results": 0, "errors": 0, "undeliverable": 0}

    def start(self) -> None:
        self.storage.start()
        if self.turns is not None:
            self.turns.start()
        self.pool.start()
        self._update_reading()
        log.info("agents run on the %s backend%s", self.backend.name,
                 f" ({self.backend_note})" if self.backend_note else "")

    def stats(self) -> dict[str, Any]:
        return {**self.backend.describe(), "backend_note": self.backend_note,
                "limit": self.limit.limit, "max_concurrency": self.config.pool.max_concurrency,
                "load": self.limit.measured, "active_jobs": len(self.jobs),
                "model_turns_waiting": self._waiting_on_model(), **self.counts,
                **(self.turns.counts if self.turns else {}),
                "pool": self.pool.stats(), "ipc": self.reader.counts}

    # -- taking jobs -------------------------------------------------------------------
    def _update_reading(self) -> None:
        """Read jobs only while a slot is free (re-measuring load before each start)."""
        told = self.limit.limit
        wanted = self.state == "serving" and len(self.jobs) < self.limit.evaluate(
            len(self.jobs), self._waiting_on_model(), self._agent_memory())
        if self.limit.limit != told and self.router_peer is not None:
            # The router holds jobs beyond the limit it last heard: a new one must reach it
            # even while no job has anything to say.
            self._send(self.router_peer, Slots(slots=self.limit.limit))
        if wanted and not self.reading:
            self.loop.add_reader(self.socket, self.on_readable)
        elif not wanted and self.reading:
            self.loop.remove_reader(self.socket)
        self.reading = wanted
        if self.jobs and self.load_timer is None:
            self.load_timer = self.loop.call_later(self.config.pool.load_interval, self._remeasure)

    def _waiting_on_model(self) -> int:
        return len(self.turns.pending) if self.turns else 0

    def _agent_memory(self) -> list[int]:
        """What each agent alive uses now (its container's memory counter, a local agent's
        resident set): the memory input of the concurrency limit."""
        found = []
        for agent in self.pool.agents.values():
            used = self.backend.memory_used(agent)
            if used:
                found.append(used)
        return found

    def _remeasure(self) -> None:
        self.load_timer = None
        self._update_reading()

    def on_readable(self) -> None:
        while len(self.jobs) < self.limit.limit:
            try:
                peer, data = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except ValueError:
                continue
            try:
                job = self.codec.decode(data)
            except msgspec.DecodeError as exc:
                log.error("unreadable job frame: %s", exc)
                continue
            if job.id in self.jobs:
                self.jobs[job.id].peer = peer  # sent again after the router reconnected
                continue
            active = ActiveJob(job, peer)
            self.router_peer = peer
            self.jobs[job.id] = active
            self.counts["jobs"] += 1
            self._dispatch(active)
        self._update_reading()

    def _dispatch(self, active: ActiveJob) -> None:
        active.attempts += 1
        agent = self.pool.acquire(active.job.chat)
        active.agent = agent
        if agent.state == "idle" and agent.job is None:
            self._run(agent, active.job)
        else:
            agent.backlog.append(active.job)  # warming (cold start) or busy with this chat

    def _run(self, agent: Agent, job: Job) -> None:
        active = self.jobs.get(job.id)
        if active is None:
            return
        agent.state = "busy"
        agent.job = job
        payload = {"text": job.text, "intent": job.intent,
                   "context": [{"text": p.text, "source": p.source} for p in job.context],
                   "history": [{"role": t.role, "content": t.content, "tools": t.tools} for t in job.history]}
        if self.config.agents.provider != "offline" and self.turns is not None:
            # The agent asks the model gateway for each turn (never the provider itself).
            payload["model"] = self._model_settings(job, agent)
        try:
            agent.send_job(payload, job.id)
        except OSError as exc:
            self._finish(active, error=f"could not hand the job to its agent: {exc}")
            return
        active.timer = self.loop.call_later(self.config.pool.job_timeout, lambda: self._timed_out(job.id))
        self.storage.write(SaveJob(
            id=job.id, message_id=job.id, chat=job.chat, tier=job.tier, state="running", container=agent.id))

    def _model_settings(self, job: Job, agent: Agent) -> dict:
        """What the agent's loop needs: the tier's step limit and, once its chat's workspace
        is lent to it, the tools the tier may use there."""
        agents = self.config.agents
        settings = agents.tier(job.tier)
        model: dict = {"tier": job.tier, "max_steps": settings.max_steps}
        tools = [name for name in settings.tools if name != RUN_TOOL or self.run_allowed]
        if tools and agent.workspace:
            model.update(tools=tools, workspace=agent.workspace, workspace_mb=agents.workspace_mb,
                         run_timeout_s=agents.run_timeout)
        return model

    @property
    def run_allowed(self) -> bool:
        """Commands run in a container; on the local backend only when the config says so."""
        return self.backend.name != "local" or self.config.agents.local_run

    def _timed_out(self, job_id: str) -> None:
        active = self.jobs.get(job_id)
        if active is not None:
            self._finish(active, error=f"the agent gave no answer within {self.config.pool.job_timeout:g} s")

    # -- what agents say ---------------------------------------------------------------
    def _on_agent_ready(self, agent: Agent) -> None:
        if agent.backlog:
            self._run(agent, agent.backlog.popleft())

    def _on_agent_message(self, agent: Agent, message: ipc.Message) -> None:
        if message.kind == "ready":
            self.pool.agent_ready(agent)
            return
        active = self.jobs.get(message.job)
        if message.kind == "exit":
            self.pool.agent_exited(agent.id)
        elif active is None or active.agent is not agent:
            log.warning("agent %s wrote %s for a job it is not running", agent.id, message.kind)
        elif message.kind == "progress":
            if active.progress < self.config.pool.max_progress_per_job:  # no spamming the user
                active.progress += 1
                self._send(active.peer, JobProgress(id=message.job, chat=message.chat,
                                                    text=_agent_note(message.payload.get("stage", "working"))))
        elif message.kind == "model" and self.turns is not None:
            self.turns.ask(active, message)
        elif message.kind == "result":
            self._finish(active, result=message.payload, written_at=message.ts, read_at=time.time())
        elif message.kind == "error":
            self._finish(active, error=_agent_note(message.payload.get("error", "the agent failed")))

    def _on_rejected(self, agent: Agent, error: ipc.IpcError) -> None:
        """The runner writes only signed, well-formed files: anything else means the agent is
        broken or hostile, so it is replaced at once (one log line, however much it writes)."""
        if agent.state == "retired":
            return
        log.warning("rejected a file from agent %s: %s", agent.id, error)
        self.pool.retire(agent, f"broke the IPC protocol ({type(error).__name__})")
        self._on_agent_lost(agent, "its agent broke the IPC protocol")

    def _check_limits(self, agent: Agent) -> None:
        """At each sweep: an agent that ran into a limit the engine reports no event for."""
        why = self.backend.limit_reached(agent)
        if why and agent.state != "retired":
            self.pool.agent_exited(agent.id, why)

    def _on_agent_lost(self, agent: Agent, why: str) -> None:
        """Jobs of a lost agent get one more try on a fresh agent, then an error."""
        lost = ([agent.job] if agent.job else []) + list(agent.backlog)
        agent.job = None
        agent.backlog.clear()
        for job in lost:
            active = self.jobs.get(job.id)
            if active is None:
                continue
            if active.timer is not None:
                active.timer.cancel()
            if active.attempts < MAX_ATTEMPTS:
                log.warning("job %s lost its agent (%s); trying another", job.id, why)
                self._dispatch(active)
            else:
                self._finish(active, error=why)

    # -- finishing ---------------------------------------------------------------------
    def _finish(self, active: ActiveJob, result: dict | None = None, error: str = "",
                written_at: float = 0.0, read_at: float = 0.0) -> None:
        job, agent = active.job, active.agent
        del self.jobs[job.id]
        if active.asking:  # a turn still under way: its answer finds no job and is dropped
            self.turns.pop(active.asking, None)
        if active.timer is not None:
            active.timer.cancel()
        frame = self._result_frame(job, agent, result, error)
        frame.written_at, frame.read_at = written_at, read_at
        self.counts["errors" if frame.error else "results"] += 1
        frame.sent_at = time.time()
        self._send(active.peer, frame)
        self.storage.write(SaveJob(
            id=job.id, message_id=job.id, chat=job.chat, tier=job.tier,
            state="failed" if frame.error else "done", container=agent.id if agent else ""))
        # The gateway records the usage of every model turn itself, from the provider's
        # own counts; a job answered without one (the offline agent) gets its row here.
        if not frame.error and not active.turns:
            price = self.config.prices.get(frame.model)
            cost = ((frame.input_tokens * price.input + frame.output_tokens * price.output) / PER_MILLION
                    if price else None)
            self.storage.write(SaveUsage(
                job_id=job.id, model=frame.model, input_tokens=frame.input_tokens,
                output_tokens=frame.output_tokens, cost_usd=cost))
        if agent is not None and agent.job is job:
            agent.job = None
            if error:
                self.pool.retire(agent, "its job failed")
                self._on_agent_lost(agent, error)  # its backlog moves to a fresh agent
            else:
                self.pool.release(agent)
                if agent.state == "idle" and agent.backlog:
                    self._run(agent, agent.backlog.popleft())
                elif agent.state == "retired" and agent.backlog:
                    self._on_agent_lost(agent, "its agent was retired")
        self._update_reading()

    @staticmethod
    def _result_frame(job: Job, agent: Agent | None, result: dict | None, error: str) -> JobResult:
        container = agent.id if agent else ""
        if result is None:
            return JobResult(id=job.id, chat=job.chat, error=error, container=container)
        if result.get("refused") == "budget":
            # The gateway refused the turn (the agent only passes it on): today's budget is spent.
            wait = result.get("retry_after")
            return JobResult(id=job.id, chat=job.chat, container=container, refused="budget",
                             error=_agent_note(result.get("notice") or "today's model budget is spent"),
                             retry_after=float(wait) if type(wait) in (int, float) and wait >= 0 else None)
        # The payload is the agent's word: any JSON at all, so every field is checked.
        usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
        agent_name = str(result.get("agent", ""))
        return JobResult(
            id=job.id, chat=job.chat, text=str(result.get("text", "")), agent=agent_name,
            model=agent_name.split(":", 1)[1] if ":" in agent_name else agent_name,
            container=container,
            input_tokens=_tokens(usage, "input_tokens", "prompt_tokens"),
            output_tokens=_tokens(usage, "output_tokens", "completion_tokens"),
            tools=shorten(str(result.get("tools", "")), MAX_TOOL_LOG_CHARS))

    def _send(self, peer: bytes, frame: JobResult | JobProgress | Slots) -> None:
        frame.slots = self.limit.limit
        try:
            self.socket.send_multipart([peer, self.out.encode(frame)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # The router is restarting; it sends its unanswered jobs again when it is back.
            self.counts["undeliverable"] += 1
            log.warning("could not send %s for job %s to the router: %s",
                        type(frame).__name__, frame.id, exc.strerror)

    def _on_store_failed(self, key: str, error: str) -> None:
        log.error("the store-writer could not store %s: %s", key, error)

    # -- shutdown ----------------------------------------------------------------------
    def drain(self, done: Callable[[], None]) -> None:
        """Stop taking jobs and remove every agent. Unfinished jobs are not answered here:
        the router still has them and sends them again after a restart."""
        self.state = "draining"
        self._update_reading()
        self.pool.stop(done)
