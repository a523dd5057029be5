"""warmwire's command line: run (default), status, chat, learn, keys, web-token. ``./run.sh`` calls this."""

from __future__ import annotations

import argparse
import sys

from proto.config import ConfigError, load

from .commands import chat, keys, learn, run, status, webtoken

COMMANDS = {"run": run, "status": status, "chat": chat, "learn": learn, "keys": keys,
            "web-token": webtoken}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="warmwire",
        description="The fast core of a self-hosted personal AI assistant. "
                    "Settings: proto/defaults.toml, overridden by WARMWIRE_* variables.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    args = parser.parse_args(argv)
    module = COMMANDS[args.command or "run"]  # run takes no arguments
    try:
        config = load()
    except ConfigError as exc:
        print(f"warmwire: {exc}", file=sys.stderr)
        return 2
    return module.main(config, args)


if __name__ == "__main__":
    sys.exit(main())
