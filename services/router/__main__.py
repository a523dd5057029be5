"""python -m services.router: wire the configuration to the router."""

from proto.config import Config
from proto.loop import EventLoop
from proto.service import run_service
from proto.sockets import bind_router, connect_dealer

from .classifier import Classifier
from .service import Router


def build(config: Config, ctx, loop: EventLoop) -> Router:
    frontend = bind_router(ctx, config.router.frontend, hwm=config.router.frontend_hwm,
                           max_msg_size=config.router.hard_frame_bytes)
    store = connect_dealer(ctx, config.endpoint("store"))
    router = Router(config.router, frontend, store, config.database, config.store.busy_timeout_ms,
                    Classifier.load(), loop)
    router.start()
    return router


if __name__ == "__main__":
    run_service("router", build)
