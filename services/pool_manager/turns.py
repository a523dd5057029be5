"""Agents' model turns, relayed: an agent's signed `model` file → the model gateway → a
signed `turn` file back to the agent (the text's deltas go from the gateway straight to the
router, on their way to the client).

The host counts the turns, not the agent: at most the tier's step limit per job, one at a
time, so an agent cannot spend more than its job allows. Whatever is wrong with a request is
answered with an error turn, so an agent never waits in vain. A restarted gateway gets the
turns its predecessor held again (their agents are still waiting).
"""

from __future__ import annotations

import logging
from typing import Callable

import msgspec
import zmq

from proto import ipc
from proto.config import Config
from proto.frames import (
    Codec, GatewayIn, GatewayOut, JobProgress, TurnRequest, TurnResult, shorten,
)
from proto.loop import EventLoop
from proto.reconnects import Reconnects
from proto.sockets import received

from .agents import ActiveJob

log = logging.getLogger(__name__)


class ModelTurns:
    def __init__(self, config: Config, socket: zmq.Socket, loop: EventLoop, jobs: dict[str, ActiveJob],
                 send: Callable[[bytes, JobProgress], None],
                 fail: Callable[[ActiveJob, str], None]) -> None:
        """send(peer, frame): to the router; fail(active, error): end the job with an error."""
        self.config = config
        self.socket = socket
        self.loop = loop
        self.jobs = jobs
        self.send = send
        self.fail = fail
        self.codec = Codec(GatewayIn)
        self.answers = Codec(GatewayOut)
        # Turns asked of the gateway and not answered yet: request id -> the encoded request,
        # sent again if the gateway restarts (what it held died with it).
        self.pending: dict[str, bytes] = {}
        self.reconnects = Reconnects(socket, loop, self._resend)
        self.counts = {"model_turns": 0, "turns_resent": 0}

    def start(self) -> None:
        self.loop.add_reader(self.socket, self.on_readable)
        self.reconnects.start()

    def ask(self, active: ActiveJob, message: ipc.Message) -> None:
        """An agent asks for a model turn: checked, then sent to the gateway."""
        job = active.job
        payload = message.payload
        max_steps = self.config.agents.tier(job.tier).max_steps
        active.asked += 1
        req = job.id if active.asked == 1 else f"{job.id}#{active.asked}"
        error = ""
        if active.asking:
            error = "a model turn is already under way for this job"
        elif active.asked > max_steps:
            error = f"the step limit ({max_steps}) is reached"
        if error:
            self._answer(active, TurnResult(req=req, job=job.id, chat=job.chat, error_kind="config",
                                            error=error))
            return
        try:
            request = msgspec.convert({"req": req, "job": job.id, "chat": job.chat, "tier": job.tier,
                                       "system": payload.get("system", ""),
                                       "messages": payload.get("messages", []),
                                       "tools": payload.get("tools", []),
                                       "tool_ms": payload.get("tool_ms", 0.0)}, TurnRequest)
        except msgspec.ValidationError as exc:
            self._answer(active, TurnResult(req=req, job=job.id, chat=job.chat, error_kind="config",
                                            error=f"malformed model request: {shorten(str(exc))}"))
            return
        data = self.codec.encode(request)
        try:
            self.socket.send(data, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self._answer(active, TurnResult(req=req, job=job.id, chat=job.chat, error_kind="provider",
                                            error=f"the model gateway is not reachable ({exc.strerror})"))
            return
        active.asking = req
        self.pending[req] = data
        self.counts["model_turns"] += 1

    def _resend(self) -> None:
        """A restarted gateway: the turns the old one held are sent again (their agents are
        waiting for them)."""
        if self.pending:
            log.warning("the model gateway reconnected; sending its %d unanswered turns again", len(self.pending))
        for data in self.pending.values():
            try:
                self.socket.send(data, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the job's timeout answers it
        self.counts["turns_resent"] += len(self.pending)

    def on_readable(self) -> None:
        for frame in received(self.socket, self.answers, "the model gateway", log):
            active = self.jobs.get(frame.job)
            self.pending.pop(frame.req, None)
            if active is None or active.agent is None or active.asking != frame.req:
                continue  # the job ended meanwhile (timed out, its agent lost)
            active.asking = ""
            if frame.error_kind != "budget" and not frame.error:
                active.turns += 1
            if frame.budget_notice:
                self.send(active.peer, JobProgress(id=frame.job, chat=frame.chat, text=frame.budget_notice))
            self._answer(active, frame)

    def _answer(self, active: ActiveJob, turn: TurnResult) -> None:
        payload = {"req": turn.req, "text": turn.text, "stop_reason": turn.stop_reason,
                   "tool_calls": msgspec.to_builtins(turn.tool_calls), "model": turn.model,
                   "provider": turn.provider, "error": turn.error, "error_kind": turn.error_kind,
                   "retry_after": turn.retry_after,
                   "usage": {"input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens}}
        try:
            active.agent.send("turn", active.job.id, payload)
        except OSError as exc:
            self.fail(active, f"could not hand the model's turn to the agent: {exc}")
