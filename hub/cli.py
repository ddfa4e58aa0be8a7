"""`vigil-hub --config hub.toml [--check-config]`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hub.config import ConfigError, load_hub_config
from hub.service import HubService, StartupError
from shared import __version__
from shared.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vigil-hub", description="Pull edge segments into S3 and serve them.")
    parser.add_argument("--config", "-c", type=Path, required=True, help="path to hub.toml")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"vigil-hub {__version__}")
    args = parser.parse_args(argv)
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
