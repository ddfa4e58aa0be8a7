"""`vigil-edge --config edge.toml [--check-config]`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge.config import ConfigError, load_edge_config
from edge.node import EdgeNode, StartupError
from shared import __version__
from shared.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vigil-edge", description="Record RTSP cameras into fMP4 segments.")
    parser.add_argument("--config", "-c", type=Path, required=True, help="path to edge.toml")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"vigil-edge {__version__}")
    args = parser.parse_args(argv)
    try:
        config = load_edge_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    if args.check_config:
        enabled = sum(c.enabled for c in config.cameras)
        print(f"config ok: node {config.node.id}, {len(config.cameras)} cameras ({enabled} enabled), "
              f"data in {config.node.data_dir}")
        return 0
    setup_logging(config.node.log_level, node=config.node.id)
    node = EdgeNode(config)
    try:
        node.run_forever()
    except StartupError as exc:
        logging.getLogger("edge").error("cannot start", extra={"error": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
