"""python -m services.router: wire the configuration to the router."""

import zmq

from proto.config import Config
from proto.curve import frontend_options
from proto.loop import EventLoop
from proto.service import run_service
from proto.sockets import bind_pull, bind_router, connect_dealer

from .classifier import Classifier
from .service import Router

POOL_IDENTITY = b"router"


def build(config: Config, ctx, loop: EventLoop) -> Router:
    frontend = bind_router(ctx, config.router.frontend, hwm=config.router.frontend_hwm,
                           max_msg_size=config.router.hard_frame_bytes,
                           options=frontend_options(config, ctx, loop))
    store = connect_dealer(ctx, config.endpoint("store"))
    # A fixed identity: the pool-manager's answers reach a restarted router too.
    pool = connect_dealer(ctx, config.endpoint("pool"), identity=POOL_IDENTITY, options={
        zmq.SNDHWM: config.pool.queue_hwm, zmq.SNDBUF: config.pool.queue_buffer_bytes})
    deltas = bind_pull(ctx, config.endpoint("deltas"), hwm=config.gateway.deltas_hwm,
                       max_msg_size=config.router.hard_frame_bytes)
    search = connect_dealer(ctx, config.endpoint("search"))
    router = Router(config, frontend, store, pool, deltas, search, Classifier.load(), loop)
    router.start()
    return router


if __name__ == "__main__":
    run_service("router", build)
