"""python -m services.store_writer: wire the configuration to the store-writer."""

from proto.config import Config
from proto.loop import EventLoop
from proto.service import run_service
from proto.sockets import bind_router

from .database import open_writer
from .service import StoreWriter


def build(config: Config, ctx, loop: EventLoop) -> StoreWriter:
    conn = open_writer(config.database, config.store.busy_timeout_ms, config.store.wal_autocheckpoint_pages)
    socket = bind_router(ctx, config.endpoint("store"))
    writer = StoreWriter(conn, socket, config.store.batch_max, loop, config.store.checkpoint_after_idle)
    loop.add_reader(socket, writer.on_readable)
    return writer


if __name__ == "__main__":
    run_service("store-writer", build)
