"""python -m services.pool_manager: wire the configuration to the pool-manager."""

import zmq

from proto.config import Config
from proto.loop import EventLoop
from proto.service import run_service
from proto.sockets import bind_router, connect_dealer

from . import backends
from .backends.common import home_label
from .pool import agent_name_prefix
from .service import PoolManager


def build(config: Config, ctx, loop: EventLoop) -> PoolManager:
    # Small receive queues (ZeroMQ's and the kernel's): jobs the pool cannot take yet back up
    # to the router at once, which then tells the user.
    socket = bind_router(ctx, config.endpoint("pool"), options={
        zmq.RCVHWM: config.pool.queue_hwm, zmq.RCVBUF: config.pool.queue_buffer_bytes})
    # A restarted router reconnects under the same identity and takes over its jobs' answers.
    socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
    storage = connect_dealer(ctx, config.endpoint("store"))
    # Agents' model turns go to the model gateway (the only holder of provider keys).
    gateway = connect_dealer(ctx, config.endpoint("gateway"))
    manager: PoolManager | None = None

    def on_exit(agent_id: str, why: str) -> None:
        manager.pool.agent_exited(agent_id, why)

    backend, note = backends.choose(config, loop, on_exit)
    manager = PoolManager(config, socket, storage, loop, backend, note,
                          agent_name_prefix(home_label(config)), gateway)
    manager.start()
    return manager


if __name__ == "__main__":
    run_service("pool-manager", build)
