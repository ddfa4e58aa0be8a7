"""`vigil-hub --config hub.toml [--check-config]`, `vigil-hub --hash-token` (reads a token on stdin)."""

from __future__ import annotations

import argparse
import hashlib
import logging
import secrets
import sys
from pathlib import Path

from hub.config import ConfigError, load_hub_config
from hub.service import HubService, StartupError
from shared import __version__
from shared.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vigil-hub", description="Pull edge segments into S3 and serve them.")
    parser.add_argument("--config", "-c", type=Path, help="path to hub.toml")
    parser.add_argument("--hash-token", action="store_true",
                        help="read an API token on stdin (empty: make a new one) and print the sha256 line for "
                             "[[tokens]]")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"vigil-hub {__version__}")
    args = parser.parse_args(argv)
    if args.hash_token:
        token = sys.stdin.readline().strip()
        if not token:
            token = secrets.token_urlsafe(32)
            print(f"token (give it to its holder; it is not stored): {token}")
        elif len(token) < 16:
            print("error: a token must be at least 16 characters", file=sys.stderr)
            return 2
        print(f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"')
        return 0
    if args.config is None:
        parser.error("--config is required")
    try:
        config = load_hub_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"config ok: {len(config.nodes)} nodes listed, accept_new_nodes={config.ingest.accept_new_nodes}, "
              f"bucket {config.s3.bucket} at {config.s3.endpoint_url}")
        return 0
    setup_logging(config.hub.log_level, node="hub")
    service = HubService(config)
    try:
        service.run_forever()
    except StartupError as exc:
        logging.getLogger("hub").error("cannot start", extra={"error": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
