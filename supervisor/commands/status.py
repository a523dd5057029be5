"""warmwire status: the state of every service; exit 0 only when all are healthy."""

from __future__ import annotations

import argparse
import json
import sys

import msgspec
import zmq

from proto.config import Config
from proto.frames import Codec, Control, Status, StatusRequest
from proto.sockets import request

HELP = "show the state of every service (exit 0 only when all are healthy)"
HEALTHY = "healthy"
# Figures for machines (the dashboard's charts, Prometheus histograms): in --json only.
NOT_PRINTED = ("latency_series", "latency_histogram")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    return parser


def fetch(config: Config) -> Status | None:
    codec = Codec(Control)
    ctx = zmq.Context.instance()
    answer = request(ctx, config.endpoint("supervisor"), codec.encode(StatusRequest()),
                     config.client.timeout)
    return None if answer is None else codec.decode(answer)


def _format_stats(stats: dict) -> str:
    parts = []
    for key, value in stats.items():
        if key in NOT_PRINTED:
            continue
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
            parts.append(f"{key}[{value}]")
        elif isinstance(value, float):
            parts.append(f"{key}={value:.1f}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def main(config: Config, args: argparse.Namespace) -> int:
    status = fetch(config)
    if status is None:
        message = f"warmwire is not running in {config.home} (no answer from its supervisor)"
        if args.json:
            print(json.dumps({"services": [], "running": False, "error": message}))
        else:
            print(message, file=sys.stderr)
        return 1
    healthy = all(service.state == HEALTHY for service in status.services)
    if args.json:
        document = msgspec.to_builtins(status)
        document.pop("type", None)
        document["healthy"] = healthy
        print(json.dumps(document, ensure_ascii=False))
        return 0 if healthy else 1
    sup = status.supervisor
    print(f"warmwire: {'healthy' if healthy else 'NOT healthy'}  supervisor pid {sup['pid']}, "
          f"up {sup['uptime']:.0f} s, home {sup['home']}, frontend {sup['frontend']}")
    print(f"{'SERVICE':<14}{'STATE':<14}{'PID':>8}{'RESTARTS':>10}{'UPTIME':>9}  DETAILS")
    for service in status.services:
        uptime = f"{service.uptime:.0f}s" if service.uptime is not None else "-"
        print(f"{service.name:<14}{service.state:<14}{service.pid or '-':>8}{service.restarts:>10}"
              f"{uptime:>9}  {_format_stats(service.stats)}")
    return 0 if healthy else 1
