"""python -m services.search_cache: wire the configuration to the search-cache."""

from proto.service import run_service

from .service import SearchCache

if __name__ == "__main__":
    run_service("search-cache", lambda config, ctx, loop: SearchCache())
