"""warmwire keys: CurveZMQ key pairs for a frontend other hosts can reach.

Creates, in <home>/keys (0700, every file 0600): the server's pair (once, then reused) and
one client's pair, whose public half is also put in keys/authorized/, the folder the router
lets clients in from. Never overwrites a key.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys

from proto.config import Config
from proto.curve import KEY_FILE_MODE, PUBLIC_SUFFIX, SECRET_SUFFIX, CurveError, create_keys
from proto.sockets import ensure_run_dir

HELP = "create CurveZMQ keys: the server's (once) and a client's, authorized at once"
KEYS_FOLDER = "keys"
AUTHORIZED_FOLDER = "authorized"
SERVER = "server"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--client", default="client",
                        help="the new client's name (default: client); letters, digits, - and _")
    return parser


def main(config: Config, args: argparse.Namespace) -> int:
    if not NAME.match(args.client) or args.client == SERVER:
        print(f"warmwire keys: {args.client!r} is not a usable client name", file=sys.stderr)
        return 2
    folder = config.home / KEYS_FOLDER
    authorized = folder / AUTHORIZED_FOLDER
    try:
        if (folder / f"{SERVER}{SECRET_SUFFIX}").exists():
            print(f"server keys: {folder / SERVER}{SECRET_SUFFIX} (exists, kept)")
        else:
            create_keys(folder, SERVER)
            print(f"server keys: created {folder / SERVER}{PUBLIC_SUFFIX} and {SECRET_SUFFIX}")
        public, secret = create_keys(folder, args.client)
    except (CurveError, OSError) as exc:
        print(f"warmwire keys: {exc}", file=sys.stderr)
        return 1
    ensure_run_dir(authorized)
    allowed = authorized / public.name
    shutil.copyfile(public, allowed)
    allowed.chmod(KEY_FILE_MODE)
    print(f"client {args.client!r}: created {secret}, authorized by {allowed}")
    print(f"""
On the server, in {config.home / 'warmwire.toml'}:
  [router]
  frontend = "tcp://0.0.0.0:7400"
  curve_secret_key_file = "{KEYS_FOLDER}/{SERVER}{SECRET_SUFFIX}"
  curve_authorized_keys = "{KEYS_FOLDER}/{AUTHORIZED_FOLDER}"

On the client, copy {folder / SERVER}{PUBLIC_SUFFIX} and {secret} (keep it secret) and set:
  [client]
  curve_server_key_file = "{KEYS_FOLDER}/{SERVER}{PUBLIC_SUFFIX}"
  curve_secret_key_file = "{KEYS_FOLDER}/{secret.name}"
To revoke the client, delete {allowed}: its next connection is refused.""")
    return 0
