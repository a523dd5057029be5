"""Reads what agents write: one inotify instance over every agent's out/ folder.

The kernel wakes the reader when a file is renamed into place; nothing polls. When the
kernel's event queue overflows, every folder is rescanned. A sweep of all folders runs at
most once per ``sweep_interval`` as a safety net, and only while agents exist.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Callable

import inotify_simple

from proto import ipc
from proto.loop import EventLoop

log = logging.getLogger(__name__)

# A complete file is renamed into place (MOVED_TO) or closed after writing (CLOSE_WRITE).
# CREATE is watched only to catch what is never written: symlinks, FIFOs, folders.
WATCH_MASK = (inotify_simple.flags.MOVED_TO | inotify_simple.flags.CLOSE_WRITE
              | inotify_simple.flags.CREATE)
CREATE = inotify_simple.flags.CREATE
OVERFLOW = inotify_simple.flags.Q_OVERFLOW
# Files taken from one agent per wake-up, so a flooding agent cannot starve the others.
FILES_PER_AGENT_PER_WAKE = 64


class IpcReader:
    def __init__(self, loop: EventLoop, sweep_interval: float,
                 on_message: Callable[[object, ipc.Message], None],
                 on_rejected: Callable[[object, ipc.IpcError], None]) -> None:
        self.loop = loop
        self.sweep_interval = sweep_interval
        self.on_message = on_message
        self.on_rejected = on_rejected
        self.notify = inotify_simple.INotify()
        self.agents: dict[int, object] = {}   # watch descriptor -> agent
        self.watches: dict[str, int] = {}     # agent id -> watch descriptor
        self.sweep_timer = None
        self.counts = {"files": 0, "rejected": 0, "overflows": 0, "sweeps": 0}
        loop.add_reader(self.notify.fileno(), self.on_readable)

    def watch(self, agent) -> None:
        """Watch before the agent starts, so its `ready` file cannot be missed."""
        wd = self.notify.add_watch(str(agent.layout.from_agent), WATCH_MASK)
        self.agents[wd] = agent
        self.watches[agent.id] = wd
        if self.sweep_timer is None:
            self.sweep_timer = self.loop.call_later(self.sweep_interval, self._sweep)

    def unwatch(self, agent) -> None:
        wd = self.watches.pop(agent.id, None)
        if wd is not None:
            self.agents.pop(wd, None)
            try:
                self.notify.rm_watch(wd)
            except OSError:
                pass  # the folder is already gone, and the watch with it

    def on_readable(self) -> None:
        events = self.notify.read(timeout=0)
        if any(event.mask & OVERFLOW for event in events):
            self.counts["overflows"] += 1
            log.warning("inotify queue overflowed; rescanning every agent folder")
            self.rescan()
            return
        for event in events:
            agent = self.agents.get(event.wd)
            if agent is None or not ipc.is_candidate(event.name):
                continue
            if event.mask & CREATE and self._is_regular(agent, event.name):
                continue  # being written: its CLOSE_WRITE or MOVED_TO follows
            self.consume(agent, event.name)

    @staticmethod
    def _is_regular(agent, name: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(os.path.join(agent.layout.from_agent, name)).st_mode)
        except OSError:
            return True  # gone already: nothing to do

    def rescan(self) -> None:
        for agent in list(self.agents.values()):
            self.scan(agent)

    def scan(self, agent) -> None:
        """Read the files waiting in one agent's folder (oldest first)."""
        for name in ipc.pending(agent.layout.from_agent)[:FILES_PER_AGENT_PER_WAKE]:
            if agent.id not in self.watches:
                return  # the agent was retired by an earlier file
            self.consume(agent, name)

    def consume(self, agent, name: str) -> None:
        folder = str(agent.layout.from_agent)
        try:
            message = ipc.parse(os.path.join(folder, name), agent.secret, agent.expected_chat,
                                folder, kinds=ipc.AGENT_KINDS)
        except ipc.Missing:
            return  # already consumed (a rescan raced the event)
        except ipc.IpcError as exc:
            self.counts["rejected"] += 1
            ipc.remove(folder, name)
            self.on_rejected(agent, exc)
            return
        ipc.remove(folder, name)
        self.counts["files"] += 1
        self.on_message(agent, message)

    def _sweep(self) -> None:
        self.sweep_timer = None
        if not self.agents:
            return  # idle: nothing to sweep, and no timer until an agent exists again
        self.counts["sweeps"] += 1
        self.rescan()
        self.sweep_timer = self.loop.call_later(self.sweep_interval, self._sweep)
