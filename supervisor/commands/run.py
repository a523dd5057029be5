"""warmwire run: start every service and serve in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging

from proto.config import Config
from proto.curve import check_endpoints
from proto.service import setup_logging
from proto.webaccess import WebConfigError, check_listen

from ..supervisor import AlreadyRunning, Supervisor

HELP = "run every service in the foreground (the default); Ctrl-C or SIGTERM stops them all"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return parser


def main(config: Config, args: argparse.Namespace) -> int:
    log = setup_logging("supervisor", config.log_dir)
    try:
        # A socket other hosts could reach unprotected stops the start here, with one clear
        # line, rather than as a router that fails again and again.
        check_endpoints(config)
        check_listen(config)
        Supervisor(config).run()
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return 1
    except (OSError, ValueError, WebConfigError) as exc:
        logging.getLogger("supervisor").error("cannot start: %s", exc)
        return 1
    return 0
