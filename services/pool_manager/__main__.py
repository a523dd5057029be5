"""python -m services.pool_manager: wire the configuration to the pool-manager."""

from proto.service import run_service

from .service import PoolManager

if __name__ == "__main__":
    run_service("pool-manager", lambda config, ctx, loop: PoolManager())
