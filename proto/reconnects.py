"""A DEALER's reconnections, seen through its socket monitor.

What was sent to a peer process that then died is gone with it; ZeroMQ reconnects to the
restarted one on its own, but only the sender knows what to send again. Used by the router
(for the pool-manager's unanswered jobs and the search-cache's unanswered requests) and by the
pool-manager (for the model gateway's unanswered turns).
"""

from __future__ import annotations

from typing import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from proto.loop import EventLoop


class Reconnects:
    """Calls ``on_reconnect`` when the socket connects again after it lost its peer.

    A reconnection is a connect that follows a disconnect. (Counting connects instead, and
    taking the first for the start, missed the first restart of the pool-manager: the socket
    connects as soon as it is made, before the router builds this monitor, so that event is
    never seen, and the jobs the dead pool-manager held waited for a router restart.)"""

    def __init__(self, socket: zmq.Socket, loop: EventLoop, on_reconnect: Callable[[], None]) -> None:
        self.monitor = socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.loop = loop
        self.on_reconnect = on_reconnect
        self.disconnected = False

    def start(self) -> None:
        self.loop.add_reader(self.monitor, self._on_monitor)

    def _on_monitor(self) -> None:
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self.disconnected = True
            elif event == zmq.EVENT_CONNECTED and self.disconnected:
                self.disconnected = False
                self.on_reconnect()
