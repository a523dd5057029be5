"""A small event loop over zmq.Poller: sockets, file descriptors, timers and signals.

Nothing here wakes up on its own: the poll blocks until a socket or fd is readable, a signal
arrives, or the earliest timer is due. A process with no timers and no traffic sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import zmq

log = logging.getLogger(__name__)

# Worker threads for blocking calls (container starts and removals: the pool-manager lets
# pool.engine_calls of them run at once, services/pool_manager/engine.py).
THREADS = 4


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self) -> None:
        self._poller = zmq.Poller()
        self._readers: dict[object, Callable[[], None]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._before_poll: list[Callable[[], None]] = []
        self._order = itertools.count()
        self._running = False
        # Wake-ups by a timer rather than by traffic: what an idle process costs (status).
        self.timers_fired = 0
        self._signal_pipe: tuple[int, int] | None = None
        self._on_signal: Callable[[int], None] | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._done_pipe: tuple[int, int] | None = None

    # -- registration ------------------------------------------------------------------
    def add_reader(self, source: zmq.Socket | int, callback: Callable[[], None]) -> None:
        self._poller.register(source, zmq.POLLIN)
        self._readers[source] = callback

    def remove_reader(self, source: zmq.Socket | int) -> None:
        if source in self._readers:
            self._poller.unregister(source)
            del self._readers[source]

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def call_before_poll(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once, after this wake-up's callbacks and before the loop waits
        again: what they send one by one can go out as one message."""
        self._before_poll.append(callback)

    def handle_signals(self, signums: list[int], callback: Callable[[int], None]) -> None:
        """Deliver these signals to callback from inside the loop, never mid-handler."""
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._signal_pipe = (read_fd, write_fd)
        self._on_signal = callback
        signal.set_wakeup_fd(write_fd)
        for signum in signums:
            # A Python-level handler is needed so the default action (exit) does not run;
            # the wake-up fd carries the signal number to the loop.
            signal.signal(signum, lambda *_: None)
        self.add_reader(read_fd, self._drain_signals)

    def _drain_signals(self) -> None:
        assert self._signal_pipe is not None and self._on_signal is not None
        try:
            data = os.read(self._signal_pipe[0], 256)
        except BlockingIOError:
            return
        for signum in data:
            self._on_signal(signum)

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """From any thread: run callback inside the loop, as soon as it wakes."""
        if self._done_pipe is None:
            raise RuntimeError("call enable_threads() from the loop's thread first")
        self._done.put(callback)
        os.write(self._done_pipe[1], b"x")

    def enable_threads(self) -> None:
        if self._done_pipe is None:
            self._done_pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self.add_reader(self._done_pipe[0], self._run_done)

    def run_in_thread(self, work: Callable[[], Any], on_done: Callable[[Any, BaseException | None], None]) -> None:
        """Run blocking work (a docker call) off the loop; on_done(result, error) runs in it."""
        self.enable_threads()
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="loop-work")

        def call() -> None:
            try:
                result, error = work(), None
            except BaseException as exc:  # handed to on_done, which decides
                result, error = None, exc
            self.call_soon_threadsafe(lambda: on_done(result, error))

        self._threads.submit(call)

    def _run_done(self) -> None:
        assert self._done_pipe is not None
        try:
            os.read(self._done_pipe[0], 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                callback = self._done.get_nowait()
            except queue.Empty:
                return
            callback()

    # -- running ---------------------------------------------------------------------
    def stop(self) -> None:
        self._running = False

    def _run_due_timers(self) -> float | None:
        """Run what is due; return ms until the next timer, or None if there is none."""
        while self._timers:
            when, _, timer = self._timers[0]
            if timer.cancelled:
                heapq.heappop(self._timers)
                continue
            delay = when - time.monotonic()
            if delay > 0:
                return delay * 1000
            heapq.heappop(self._timers)
            self.timers_fired += 1
            timer.callback()
        return None

    def run(self) -> None:
        self._running = True
        while self._running:
            timeout = self._run_due_timers()
            while self._before_poll:
                self._before_poll.pop()()
            if not self._running:
                break
            for source, _ in self._poller.poll(timeout):
                callback = self._readers.get(source)
                if callback is not None:
                    callback()

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=False)
            self._threads = None
        if self._done_pipe is not None:
            for fd in self._done_pipe:
                os.close(fd)
            self._done_pipe = None
        if self._signal_pipe is not None:
            signal.set_wakeup_fd(-1)
            for fd in self._signal_pipe:
                os.close(fd)
            self._signal_pipe = None
