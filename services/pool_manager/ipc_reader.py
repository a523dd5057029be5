"""Reads what agents write: one inotify instance over every agent's out/ folder.

The kernel wakes the reader when a file is renamed into place; nothing polls. When the
kernel's event queue overflows, every folder is rescanned. A sweep of all folders runs at
most once per ``sweep_interval`` as a safety net, and only while agents exist.

An agent can write anywhere in its IPC area (ipc/, in/ and out/ are all on its mount), so
the reader watches all three and rejects, as a broken protocol: a folder made anywhere, any
entry in ipc/ itself, an entry in in/ the host did not write, out/ removed or replaced, and
more than ``max_entries`` files in out/ not yet consumed (a flood). The agent is then
replaced and its area deleted, so neither its disk use nor a flood of files outlives it.
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
# In ipc/ and in/, only what appears there matters.
ENTRY_MASK = inotify_simple.flags.MOVED_TO | inotify_simple.flags.CREATE
CREATE = inotify_simple.flags.CREATE
ISDIR = inotify_simple.flags.ISDIR
IGNORED = inotify_simple.flags.IGNORED
OVERFLOW = inotify_simple.flags.Q_OVERFLOW
OUT, IN, ROOT = "out", "in", "root"
# Files taken from one agent per wake-up, so a flooding agent cannot starve the others.
FILES_PER_AGENT_PER_WAKE = 64


def count_entries(folder, limit: int) -> int:
    """Entries in a folder, counted up to limit + 1 only: a flooded folder costs no more."""
    count = 0
    try:
        with os.scandir(folder) as entries:
            for _ in entries:
                count += 1
                if count > limit:
                    break
    except OSError:
        pass  # gone or swapped: the reader rejects it when it reads from it
    return count


def _shown(agent, where: str, event) -> str:
    """An event's entry as a log line may show it; made only for a rejection, since
    redacting the agent's key out of the name costs time on every result file."""
    name = ipc.safe_name(event.name, agent.secret)
    return name if where == ROOT else f"{where}/{name}"


class IpcReader:
    def __init__(self, loop: EventLoop, sweep_interval: float, max_entries: int,
                 on_message: Callable[[object, ipc.Message], None],
                 on_rejected: Callable[[object, ipc.IpcError], None],
                 on_sweep: Callable[[object], None]) -> None:
        self.loop = loop
        self.sweep_interval = sweep_interval
        self.max_entries = max_entries
        self.on_message = on_message
        self.on_rejected = on_rejected
        self.on_sweep = on_sweep
        self.notify = inotify_simple.INotify()
        self.agents: dict[int, tuple[object, str]] = {}  # watch descriptor -> (agent, which folder)
        self.watches: dict[str, list[int]] = {}          # agent id -> its watch descriptors
        self.sweep_timer = None
        self.counts = {"files": 0, "rejected": 0, "overflows": 0, "sweeps": 0}
        loop.add_reader(self.notify.fileno(), self.on_readable)

    def watch(self, agent) -> None:
        """Watch before the agent starts, so its `ready` file cannot be missed."""
        lay = agent.layout
        wds = [self.notify.add_watch(str(lay.from_agent), WATCH_MASK),
               self.notify.add_watch(str(lay.to_agent), ENTRY_MASK),
               self.notify.add_watch(str(lay.ipc_dir), ENTRY_MASK)]
        for wd, where in zip(wds, (OUT, IN, ROOT)):
            self.agents[wd] = (agent, where)
        self.watches[agent.id] = wds
        if self.sweep_timer is None:
            self.sweep_timer = self.loop.call_later(self.sweep_interval, self._sweep)

    def unwatch(self, agent) -> None:
        for wd in self.watches.pop(agent.id, []):
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
            watched = self.agents.get(event.wd)
            if watched is None:
                continue  # unwatched meanwhile (an earlier event retired its agent)
            agent, where = watched
            broken = self._broken(agent, where, event)
            if broken:
                self.counts["rejected"] += 1
                self.on_rejected(agent, broken)
                continue
            if where != OUT or not ipc.is_candidate(event.name):
                continue
            if event.mask & CREATE and self._is_regular(agent, event.name):
                continue  # being written: its CLOSE_WRITE or MOVED_TO follows
            self.consume(agent, event.name)

    def _broken(self, agent, where: str, event) -> ipc.IpcError | None:
        """What an event shows the agent did against the protocol, if anything."""
        if event.mask & IGNORED:
            return ipc.OutsideFolder(f"ipc folder {where}/ was removed or replaced")
        if event.mask & ISDIR:
            return ipc.OutsideFolder(f"ipc entry {_shown(agent, where, event)}: made a folder")
        if where == ROOT:
            return ipc.OutsideFolder(f"ipc entry {_shown(agent, where, event)}: written beside in/ and out/")
        if not event.mask & CREATE:
            return None
        if where == IN:
            agent.entries_in += 1
            if agent.entries_in > agent.files_sent:
                return ipc.OutsideFolder(f"ipc entry {_shown(agent, where, event)}: the host did not write it")
            return None
        agent.entries += 1
        return self._flooded(agent, agent.entries)

    def _flooded(self, agent, entries: int) -> ipc.IpcError | None:
        if entries <= self.max_entries:
            return None
        return ipc.Flooding(f"ipc folder out/ holds over {self.max_entries} unread entries")

    @staticmethod
    def _is_regular(agent, name: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(os.path.join(agent.layout.from_agent, name)).st_mode)
        except OSError:
            return True  # gone already: nothing to do

    def watched_agents(self) -> list:
        return list({id(agent): agent for agent, _ in self.agents.values()}.values())

    def rescan(self) -> None:
        for agent in self.watched_agents():
            self.scan(agent)

    def scan(self, agent) -> None:
        """Read the files waiting in one agent's folder (oldest first). Events may have been
        lost, so the entries are counted again (up to the cap only, however many there are)."""
        agent.entries = count_entries(agent.layout.from_agent, self.max_entries)
        flooded = self._flooded(agent, agent.entries)
        if flooded:
            self.counts["rejected"] += 1
            self.on_rejected(agent, flooded)
            return
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
        agent.entries -= 1
        self.counts["files"] += 1
        self.on_message(agent, message)

    def _sweep(self) -> None:
        self.sweep_timer = None
        if not self.agents:
            return  # idle: nothing to sweep, and no timer until an agent exists again
        self.counts["sweeps"] += 1
        for agent in self.watched_agents():
            self.on_sweep(agent)
        self.rescan()
        self.sweep_timer = self.loop.call_later(self.sweep_interval, self._sweep)
