"""python -m services.search_cache: wire the configuration to the search-cache."""

import os

# One BLAS thread: a query embedding is a few small matrix-vector products, where threads
# only add hand-off cost, and on a 2-core machine they would spin against chroma and the
# loop itself (measured: 3.7 ms per query with one thread, 30+ ms with the default).
# Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from proto.config import Config  # noqa: E402
from proto.loop import EventLoop  # noqa: E402
from proto.service import run_service  # noqa: E402
from proto.sockets import bind_router, connect_dealer  # noqa: E402

from .search import Searcher  # noqa: E402
from .service import SearchCacheService  # noqa: E402
from .vector import VectorIndex  # noqa: E402


def build(config: Config, ctx, loop: EventLoop) -> SearchCacheService:
    index = VectorIndex(config.chroma, config.search, None)  # the service loads the model
    searcher = Searcher(config.search, config.database, config.store.busy_timeout_ms, index)
    socket = bind_router(ctx, config.endpoint("search"), max_msg_size=config.search.hard_frame_bytes)
    store = connect_dealer(ctx, config.endpoint("store"))
    service = SearchCacheService(config.search, config.chroma.retry_interval, socket, store,
                                 searcher, index, loop)
    service.start()
    return service


if __name__ == "__main__":
    run_service("search-cache", build)
