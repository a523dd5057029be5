"""One agent: a container (or local process) with its own IPC folder, serving one chat; and
ActiveJob, a job the pool-manager holds until it is answered."""

from __future__ import annotations

import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

from proto import ipc
from proto.frames import Job
from proto.loop import Timer


class Agent:
    """States: warming (created, not ready) → ready (unassigned) → busy ⇄ idle (bound to one
    chat) → retired (being removed)."""

    def __init__(self, agent_id: str, root: Path, owner: tuple[int, int] | None) -> None:
        self.id = agent_id
        self.layout, self.secret = (ipc.prepare(root, *owner) if owner else ipc.prepare(root))
        self.handle: Any = None      # the backend's container or process
        self.state = "warming"
        self.starting = False                # the backend's start call is under way
        self.ready_timer = None              # replaces it if `ready` never comes
        self.chat: str | None = None
        self.uses = 0
        self.uses_started = False            # has it been sent a job (so bound its chat)?
        self.created = time.monotonic()
        self.ready_at: float | None = None
        self.last_used = self.created
        self.job: Job | None = None          # the job it is running
        self.backlog: deque[Job] = deque()   # this chat's jobs waiting for it
        self.writer: ipc.Writer | None = None
        self.workspace = ""                  # where its tools work, once bound ("" = no tools)
        self.keep_files = False              # its folder still holds a workspace: never delete it
        # Counted by the IPC reader, to catch an agent that floods or writes where it may not.
        self.entries = 0                     # files made in out/ and not consumed yet
        self.entries_in = 0                  # entries made in in/ (the host's own among them)
        self.files_sent = 0                  # files the host wrote into in/

    @property
    def expected_chat(self) -> str:
        """The only chat this agent's files may speak for: none until its first job binds it
        (its `ready` comes before that, even when a chat is already waiting for it)."""
        return self.chat if self.chat is not None and self.uses_started else ipc.UNASSIGNED_CHAT

    def bind(self, chat: str) -> None:
        self.chat = chat
        self.writer = ipc.Writer(self.layout.to_agent, self.secret, chat)

    def send_job(self, payload: dict, job_id: str) -> None:
        self.send("job", job_id, payload)
        self.uses_started = True

    def send(self, kind: str, job_id: str, payload: dict) -> None:
        """Write a signed file into the agent's in/ folder (a job, or a model turn)."""
        assert self.writer is not None, "bind the agent to a chat first"
        self.files_sent += 1  # before the write: its inotify event must find it counted
        self.writer.write(kind, job_id, payload)

    def discard_files(self) -> None:
        """Remove the IPC area (the key file with it), unless a workspace could not be given
        back from it (the next pool-manager's start recovers it)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if not self.keep_files:
            shutil.rmtree(self.layout.root, ignore_errors=True)


class ActiveJob:
    __slots__ = ("job", "peer", "agent", "attempts", "timer", "received", "progress", "turns", "asked",
                 "asking")

    def __init__(self, job: Job, peer: bytes) -> None:
        self.job = job
        self.peer = peer
        self.agent: Agent | None = None
        self.attempts = 0
        self.timer: Timer | None = None
        self.received = time.monotonic()
        self.progress = 0  # progress notices passed on to the user
        self.turns = 0     # model turns the gateway answered (and recorded the usage of)
        self.asked = 0     # model turns its agent asked for (the step limit counts these)
        self.asking = ""   # the turn it waits for now: one at a time
