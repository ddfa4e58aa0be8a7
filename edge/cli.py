"""`vigil-edge --config edge.toml [--check-config] [run | restore | replicate]`.

`restore` brings the catalog back from its Litestream replica on an empty machine and makes its
seqs continue past anything the hub holds; `replicate` becomes Litestream for the catalog (both
need a [litestream] table; their systemd units run them)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge.catalog import RESTORE_SEQ_MARGIN, Catalog
from edge.config import ConfigError, EdgeConfig, load_edge_config
from edge.node import EdgeNode, StartupError
from shared import __version__, litestream
from shared.logs import setup_logging
from shared.mqtt import MessageError, SyncedCursor, Topics, decode, read_retained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vigil-edge", description="Record RTSP cameras into fMP4 segments.")
    parser.add_argument("--config", "-c", type=Path, required=True, help="path to edge.toml")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"vigil-edge {__version__}")
    parser.add_argument("command", nargs="?", default="run", choices=("run", "restore", "replicate"),
                        help="run: record (default); restore: bring the catalog back from its Litestream replica "
                             "if it is missing; replicate: run Litestream for the catalog")
    args = parser.parse_args(argv)
    try:
        config = load_edge_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    if args.check_config:
        enabled = sum(c.enabled for c in config.cameras)
        rep = config.replication()
        print(f"config ok: node {config.node.id}, {len(config.cameras)} cameras ({enabled} enabled), "
              f"data in {config.node.data_dir}, serving {config.http.public_url}"
              + (f", catalog replica s3://{rep.bucket}/{rep.path}" if rep else ""))
        return 0
    if args.command == "restore":
        return restore_catalog(config)
    if args.command == "replicate":
        return litestream.run_command(config.replication(), "replicate")[0]
    setup_logging(config.node.log_level, node=config.node.id)
    node = EdgeNode(config)
    try:
        node.run_forever()
    except StartupError as exc:
        logging.getLogger("edge").error("cannot start", extra={"error": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def restore_catalog(config: EdgeConfig) -> int:
    """The restore path of a replaced box: catalog from the replica, then seqs past the hub's."""
    status, result = litestream.run_command(config.replication(), "restore")
    if result is None or result.outcome != "restored":
        return status
    hub_through = 0
    if config.mqtt is None:
        print("restore: no [mqtt] table, so the hub's synced cursor is unknown; seqs continue from the replica's "
              f"newest plus {RESTORE_SEQ_MARGIN}")
    else:
        topic = Topics(config.mqtt.topic_prefix).synced(config.node.id)
        try:
            retained = read_retained(config.mqtt, [topic], client_id=f"vigil-edge-{config.node.id}-restore")
            if topic in retained:
                cursor = decode("synced", retained[topic])
                assert isinstance(cursor, SyncedCursor)
                hub_through = cursor.through_seq
        except (ConnectionError, OSError, MessageError) as exc:
            print(f"restore: could not read the hub's synced cursor ({exc}); seqs continue from the replica's "
                  f"newest plus {RESTORE_SEQ_MARGIN}", file=sys.stderr)
    catalog = Catalog(config.node.data_dir)
    try:
        restored, floor = catalog.continue_after_restore(hub_through)
        rows = catalog.stats()["segments"]
    finally:
        catalog.close()
    print(f"restore: {rows} segment rows, newest seq {restored}; the hub holds through seq {hub_through}; "
          f"new segments start at seq {floor + 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
