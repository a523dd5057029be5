"""warmwire chat: send one message and print every frame that comes back, as JSON lines."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
import uuid

import msgspec
import zmq

from proto.config import Config
from proto.curve import CurveError, client_options
from proto.frames import Chat, ClientOut, Codec, Notice, Reply
from proto.sockets import connect_dealer, local_connect_endpoint

HELP = "send one message and print the frames that come back"
# Notices after which more frames will follow for the same message.
INTERIM_NOTICES = ("queued", "progress", "delta")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("text", nargs="+", help="the message")
    parser.add_argument("--chat", default="cli", help="conversation id (default: cli)")
    parser.add_argument("--sender", default=getpass.getuser(), help="sender name (default: you)")
    parser.add_argument("--id", default=None, help="message id (default: a new one); "
                        "resending an id gets the stored answer")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for the answer (default: client.timeout)")
    return parser


def main(config: Config, args: argparse.Namespace) -> int:
    timeout = config.client.timeout if args.timeout is None else args.timeout
    codec = Codec(ClientOut)
    frame = Chat(id=args.id or uuid.uuid4().hex, chat=args.chat, sender=args.sender,
                 text=" ".join(args.text))
    try:
        options = client_options(config)
    except CurveError as exc:
        print(f"warmwire: {exc}", file=sys.stderr)
        return 2
    endpoint = local_connect_endpoint(config.router.frontend)
    sock = connect_dealer(zmq.Context.instance(), endpoint, options=options)
    try:
        sock.send(codec.encode(frame))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000), zmq.POLLIN):
                break
            answer = codec.decode(sock.recv())
            print(json.dumps(msgspec.to_builtins(answer), ensure_ascii=False), flush=True)
            if isinstance(answer, Reply):
                return 0
            if isinstance(answer, Notice) and answer.kind not in INTERIM_NOTICES:
                return 1
        print(f"warmwire: no answer from {endpoint} within {timeout:g} s "
              "(is it running? ./run.sh status)", file=sys.stderr)
        return 1
    finally:
        sock.close()
