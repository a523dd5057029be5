"""python -m services.model_gateway: wire the configuration to the model gateway."""

import logging
import sqlite3
from pathlib import Path

from proto.config import Config, ConfigError
from proto.db import open_readonly, spend_since
from proto.loop import EventLoop
from proto.service import run_service
from proto.sockets import bind_router, connect_dealer, connect_push

from .gateway import today_start
from .service import GatewayService


def read_key(config: Config) -> str:
    """The provider's API key, from agents.api_key_file (relative to the home). Only this
    process reads it; it is never logged, sent in a frame, or written anywhere."""
    name = config.agents.api_key_file
    if config.agents.provider == "offline" or not name:
        return ""
    path = Path(name) if Path(name).is_absolute() else config.home / name
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read agents.api_key_file {str(path)!r}: {type(exc).__name__}") from None


def spent_today(config: Config) -> float:
    """What usage rows say was spent today, so a restarted gateway keeps to the budget."""
    if not config.database.exists():
        return 0.0
    import time
    try:
        conn = open_readonly(config.database, config.store.busy_timeout_ms)
        try:
            return spend_since(conn, today_start(time.time()))[2]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        logging.getLogger("model-gateway").warning("cannot read today's spend (%s); counting from 0", exc)
        return 0.0


def build(config: Config, ctx, loop: EventLoop) -> GatewayService:
    # httpx logs every request at INFO: one line per model call is not "one line per event".
    logging.getLogger("httpx").setLevel(logging.WARNING)
    socket = bind_router(ctx, config.endpoint("gateway"), max_msg_size=config.gateway.hard_frame_bytes)
    deltas = connect_push(ctx, config.endpoint("deltas"), hwm=config.gateway.deltas_hwm)
    storage = connect_dealer(ctx, config.endpoint("store"))
    service = GatewayService(config, socket, deltas, storage, loop, read_key(config), spent_today(config))
    service.start()
    return service


if __name__ == "__main__":
    run_service("model-gateway", build)
