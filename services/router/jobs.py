"""Container-tier messages: hand them to the pool-manager, or hold them and say so.

The send to the pool-manager never blocks. When it would (every agent slot is busy and the
socket's small high-water mark is full), the job waits in a bounded queue and the user is
told "queued, position N" at once; when that queue is full too, "busy, try again in T s",
and the message is stored as refused. The queue is persisted as the messages' status, so a
restarted router sends unanswered jobs again (``resume``).

If the pool-manager restarts, the jobs it had are sent again when the socket reconnects
(the pool-manager recognises a job it already has by its id).

A model's text streams in from the model gateway on a socket of its own (``deltas``) and
goes on to the job's clients as ``delta`` notices; never stored, since the reply has it all.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable

import zmq

from proto.config import Jobs as JobsConfig
from proto.frames import (
    ClientOut, Codec, Job, JobDelta, JobProgress, JobResult, Notice, PoolIn, PoolOut, Reply, SaveAnswer,
    Slots,
)
from proto.loop import EventLoop
from proto.metrics import percentile
from proto.sockets import received

from proto.reconnects import Reconnects

log = logging.getLogger(__name__)

# An agent's result on its way to the reply, stage by stage (see ResultPath).
RESULT_STAGES = ("file_to_pool_manager", "in_pool_manager", "pool_manager_to_router", "commit_and_send")
# Answer sequence numbers per message: 0 is the first answer (none for a job), then these.
SEQ_QUEUED, SEQ_FINAL = 1, 2
# persist(frame, answer, clients, then=None): store the frame; once committed, send answer to
# the clients, then call then().
Persist = Callable[..., None]
SAMPLES_KEPT = 1000


class Flight:
    __slots__ = ("job", "clients", "merged", "queued")

    def __init__(self, job: Job, clients: list[bytes], merged: dict[str, list[bytes]]) -> None:
        self.job = job
        self.clients = clients
        # The job's merged messages (Job.merged) and the clients to answer for each.
        self.merged = merged
        self.queued = False


class ResultPath:
    """Where the time from an agent's result file to the reply goes, for recent jobs: the
    file read by the pool-manager (inotify), its handling there, the frame to the router,
    the reply's commit and send. Per stage p50/p99, and the slowest 1 % stage by stage."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, ...]] = deque(maxlen=SAMPLES_KEPT)

    def add(self, result: JobResult, received_at: float) -> None:
        if result.written_at and result.read_at and result.sent_at:
            marks = (result.written_at, result.read_at, result.sent_at, received_at, time.time())
            self.samples.append(tuple((later - earlier) * 1000 for earlier, later in zip(marks, marks[1:])))

    def stats(self) -> dict:
        # Asked at every probe: each column is sorted once, for both of its percentiles.
        by_total = sorted(self.samples, key=sum)
        slowest = by_total[-max(1, len(by_total) // 100):]
        columns = [sorted(column) for column in zip(*self.samples)] or [[] for _ in RESULT_STAGES]
        totals = [sum(sample) for sample in by_total]
        return {"result_to_reply_p50_ms": percentile(totals, 0.5),
                "result_to_reply_p99_ms": percentile(totals, 0.99),
                "result_stages": {name: {
                    "p50_ms": percentile(column, 0.5), "p99_ms": percentile(column, 0.99),
                    "slowest_1pct_ms": sum(s[i] for s in slowest) / len(slowest) if slowest else None}
                    for i, (name, column) in enumerate(zip(RESULT_STAGES, columns))}}


class JobDispatcher:
    def __init__(self, config: JobsConfig, slots: int, socket: zmq.Socket, deltas: zmq.Socket, loop: EventLoop,
                 send: Callable[[bytes, ClientOut], None], persist: Persist,
                 on_done: Callable[[Job, bool], None]) -> None:
        """socket: to the pool-manager; deltas: streamed text from the model gateway.
        on_done(job, replied): the job's final answer is stored (a reply, or not)."""
        self.config = config
        self.deltas = deltas
        # Jobs the pool-manager can run at once: its configured maximum until it tells us its
        # measured limit (every frame it sends carries it).
        self.slots = slots
        self.socket = socket
        self.loop = loop
        self.send = send
        self.persist = persist
        self.on_done = on_done
        self.codec = Codec(PoolIn)
        self.answers = Codec(PoolOut)
        self.delta_codec = Codec(JobDelta)
        self.flights: dict[str, Flight] = {}   # every job not answered yet
        self.queue: deque[Flight] = deque()    # those the pool-manager has not taken
        self.reconnects = Reconnects(socket, loop, self._resend_in_flight)
        self.counts = {"jobs": 0, "queued": 0, "refused": 0, "results": 0, "failed": 0, "resent": 0, "deltas": 0}
        self.result_path = ResultPath()

    def start(self) -> None:
        # Deltas first: a job's last pieces of text are read before its reply, when both wait.
        self.loop.add_reader(self.deltas, self.on_deltas_readable)
        self.loop.add_reader(self.socket, self.on_readable)
        self.reconnects.start()

    def stats(self) -> dict:
        return {"in_flight": len(self.flights) - len(self.queue), "queued": len(self.queue),
                "max_queued": self.config.max_queued, **self.counts, **self.result_path.stats()}

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.flights

    def follow(self, job_id: str, client: bytes) -> None:
        """A client resent the message of a job still running: it gets the answer too."""
        flight = self.flights[job_id]
        flight.clients.append(client)
        position = self._position(flight)
        self.send(client, Notice(id=job_id, chat=flight.job.chat, kind="queued", position=position,
                                 text=f"still working on it (queued, position {position})" if position
                                 else "still working on it"))

    def _position(self, flight: Flight) -> int | None:
        return self.queue.index(flight) + 1 if flight.queued else None

    # -- sending -----------------------------------------------------------------------
    def submit(self, job: Job, clients: list[bytes], merged: dict[str, list[bytes]] | None = None) -> None:
        """Stored messages for an agent: send them, queue them, or refuse them, and say which."""
        if job.id in self.flights:
            return
        self.counts["jobs"] += 1
        flight = Flight(job, clients, merged or {})
        if not self.queue and self._try_send(job):
            self.flights[job.id] = flight
            return
        if len(self.queue) >= self.config.max_queued:
            self.counts["refused"] += 1
            retry = self.config.busy_retry_after
            self._answer(flight, "refused", lambda id: Notice(
                id=id, chat=job.chat, kind="busy", retry_after=retry, text=f"busy, try again in {retry:g} s"))
            return
        self.flights[job.id] = flight
        flight.queued = True
        self.queue.append(flight)
        self.counts["queued"] += 1
        position = len(self.queue)
        notice = Notice(id=job.id, chat=job.chat, kind="queued", position=position,
                        text=f"queued, position {position}")
        for client in clients:
            self.send(client, notice)
        # Persisted as the message's status: a restarted router sends it again.
        self.persist(SaveAnswer(message_id=job.id, seq=SEQ_QUEUED, status="queued", answer=notice), None, [])

    def _try_send(self, job: Job, counted: bool = False) -> bool:
        """counted: the job is already one of those in flight (sent again after a reconnect)."""
        if not counted and len(self.flights) - len(self.queue) >= self.slots:
            return False  # every slot is taken: the job waits here, where the user is told
        try:
            self.socket.send(self.codec.encode(job), zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _send_queued(self) -> None:
        while self.queue and self._try_send(self.queue[0].job):
            self.queue.popleft().queued = False

    # -- answers -----------------------------------------------------------------------
    def on_readable(self) -> None:
        for frame in received(self.socket, self.answers, "the pool-manager", log):
            self.slots = frame.slots or self.slots
            if isinstance(frame, Slots):
                continue
            flight = self.flights.get(frame.id)
            if flight is None:
                continue  # answered already (a job sent twice, answered twice)
            if isinstance(frame, JobProgress):
                for client in flight.clients:
                    self.send(client, Notice(id=frame.id, chat=frame.chat, kind="progress", text=frame.text))
            else:
                self._on_result(flight, frame)
        self._send_queued()  # every answer frees a slot

    def on_deltas_readable(self) -> None:
        for frame in received(self.deltas, self.delta_codec, "the model gateway", log):
            flight = self.flights.get(frame.id)
            if flight is None or flight.job.chat != frame.chat:
                continue  # answered already, or not a job of ours
            self.counts["deltas"] += 1
            delta = Notice(id=frame.id, chat=frame.chat, kind="delta", text=frame.text)
            for client in flight.clients:
                self.send(client, delta)

    def _on_result(self, flight: Flight, result: JobResult) -> None:
        received_at = time.time()
        job = flight.job
        del self.flights[job.id]
        if result.refused == "budget":
            # Today's model budget is spent: a clear notice, and when it renews.
            self.counts["refused_budget"] = self.counts.get("refused_budget", 0) + 1
            self._answer(flight, "refused", lambda id: Notice(
                id=id, chat=job.chat, kind="unavailable", retry_after=result.retry_after, text=result.error))
        elif result.error:
            self.counts["failed"] += 1
            log.error("job %s failed: %s", job.id, result.error)
            self._answer(flight, "failed", lambda id: Notice(
                id=id, chat=job.chat, kind="error", text=f"the agent could not answer: {result.error}"))
        else:
            self.counts["results"] += 1
            self._answer(flight, "answered", lambda id: Reply(id=id, chat=job.chat, tier=job.tier, text=result.text),
                         lambda: self.result_path.add(result, received_at), result.tools)

    def _answer(self, flight: Flight, status: str, answer_for: Callable[[str], ClientOut],
                sent: Callable[[], None] | None = None, tools: str = "") -> None:
        """Store the job's final answer for each of its messages and send it to their clients;
        once the job's own message is stored, the job is done (and ``sent()`` is called)."""
        job = flight.job
        for message_id, clients in flight.merged.items():
            answer = answer_for(message_id)
            self.persist(SaveAnswer(message_id=message_id, seq=SEQ_FINAL, status=status, answer=answer),
                         answer, clients)
        answer = answer_for(job.id)

        def done() -> None:
            if sent is not None:
                sent()
            self.on_done(job, status == "answered")

        self.persist(SaveAnswer(message_id=job.id, seq=SEQ_FINAL, status=status, answer=answer, tools=tools),
                     answer, flight.clients, then=done)

    # -- reconnects --------------------------------------------------------------------
    def _resend_in_flight(self) -> None:
        """A new pool-manager: it knows none of the jobs the old one was running."""
        in_flight = [flight for flight in self.flights.values() if not flight.queued]
        if in_flight:
            log.warning("the pool-manager reconnected; sending its %d unanswered jobs again", len(in_flight))
        for flight in in_flight:
            if not self._try_send(flight.job, counted=True):
                flight.queued = True
                self.queue.appendleft(flight)
        self.counts["resent"] += len(in_flight)
