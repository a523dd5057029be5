"""The benchmark's handle on the rebuilt old design: start its orchestrator in a process of its
own, write messages as its channel did (its own SQLite connection: a second writing process),
and collect the replies the orchestrator sends (JSON lines on its stdout)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from ..harness import terminate
from . import image, store

STOP_DEADLINE = 30.0


class OldDesign:
    def __init__(self, slots: int | None = None) -> None:
        self.image = image.ensure(log=lambda text: print(text, file=sys.stderr))
        self.home = Path(tempfile.mkdtemp(prefix="ww-bench-old-"))
        self.slots = slots
        self.replies: dict[str, dict] = {}
        self.changed = threading.Condition()
        self.proc: subprocess.Popen | None = None
        self.channel = None

    def __enter__(self) -> "OldDesign":
        args = [sys.executable, "-m", "bench.old_design", "--home", str(self.home), "--image", self.image]
        if self.slots:
            args += ["--slots", str(self.slots)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                                     stderr=open(self.home / "orchestrator.err", "w"))
        threading.Thread(target=self._read_replies, daemon=True).start()
        path = self.home / store.DATABASE
        while not path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the old orchestrator exited: see {self.home}/orchestrator.err")
            time.sleep(0.05)
        self.channel = store.connect(path)
        store.create(self.channel)
        return self

    def _read_replies(self) -> None:
        for line in self.proc.stdout:
            record = json.loads(line)
            with self.changed:
                self.replies[record["id"]] = record
                self.changed.notify_all()

    def send(self, text: str, chat: str | None = None) -> str:
        """The channel writes one message into SQLite; returns its id."""
        message_id = uuid.uuid4().hex
        store.insert_message(self.channel, message_id, chat or f"old-{message_id}", text)
        return message_id

    def wait(self, ids: list[str], timeout: float, progress=None) -> dict[str, dict]:
        """The replies to `ids` that came within `timeout` s (a missing one was never answered)."""
        deadline = time.monotonic() + timeout
        shown = -1
        with self.changed:
            while True:
                done = sum(i in self.replies for i in ids)
                if progress and done != shown:
                    shown = done
                    progress(max(done - 1, 0), len(ids))
                left = deadline - time.monotonic()
                if done == len(ids) or left <= 0:
                    break
                self.changed.wait(min(left, 1.0))
            return {i: self.replies[i] for i in ids if i in self.replies}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        if self.channel is not None:
            self.channel.close()
        terminate(self.proc, STOP_DEADLINE)
        shutil.rmtree(self.home, ignore_errors=True)


def stage_ms(record: dict, start: str, end: str) -> float | None:
    """Milliseconds between two of a reply's stage times, or None when one is missing."""
    if record.get(start) is None or record.get(end) is None:
        return None
    return (record[end] - record[start]) * 1000
