"""python -m bench.old_design --home DIR --image IMAGE [--slots N]: the old orchestrator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .orchestrator import SLOTS, Orchestrator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.old_design", description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="folder for its database and IPC folders")
    parser.add_argument("--image", required=True, help="the old agent image (bench/old_design/image.py)")
    parser.add_argument("--slots", type=int, default=SLOTS, help=f"containers at once (old: {SLOTS})")
    args = parser.parse_args(argv)
    Orchestrator(Path(args.home), args.image, args.slots).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
