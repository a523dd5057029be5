"""warmwire web-token: make the web page's token (and print it). Once it exists, the page asks
for it, /metrics wants it, and the page may listen on an address other hosts reach."""

from __future__ import annotations

import argparse

from proto.config import Config
from proto.webaccess import make_token

HELP = "make a new token for the web page (the page then asks for it); replaces the old one"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return parser


def main(config: Config, args: argparse.Namespace) -> int:
    token = make_token(config.web_token_file)
    print(token)
    print(f"(kept in {config.web_token_file}, mode 0600; the page asks for it from now on, and "
          f"/metrics wants 'Authorization: Bearer <token>')")
    return 0
