"""python -m services.store_writer: wire the configuration to the store-writer."""

from proto.config import Config
from proto.loop import EventLoop
from proto.service import run_service
from proto.sockets import bind_router

from .database import WriterFile
from .service import StoreWriter


def build(config: Config, ctx, loop: EventLoop) -> StoreWriter:
    file = WriterFile(config.database, config.store.busy_timeout_ms, config.store.wal_autocheckpoint_pages,
                      config.store.synchronous)
    socket = bind_router(ctx, config.endpoint("store"))
    # The database is opened by the writer: one it cannot write (a full disk, a read-only
    # folder) leaves it serving and saying so, instead of exiting into a restart loop.
    writer = StoreWriter(None, socket, config.store.batch_max, loop, config.store.checkpoint_after_idle,
                         file=file, retry_interval=config.store.unwritable_retry)
    loop.add_reader(socket, writer.on_readable)
    return writer


if __name__ == "__main__":
    run_service("store-writer", build)
