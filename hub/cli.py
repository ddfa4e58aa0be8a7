"""`vigil-hub --config hub.toml [--check-config] [--role all|ingest|api|jobs] [run | restore | replicate | nodes
[--watch S] [--json]]`
(restore: hub.db from its Litestream replica if it is missing; replicate: become Litestream for
hub.db; nodes: the fleet as seen over MQTT),
`vigil-hub --hash-token` (reads a token on stdin),
`vigil-hub verify-export DIR_OR_ID [--public-key PEM | --config hub.toml]`."""

from __future__ import annotations

import argparse
import hashlib
import logging
import secrets
import sys
from pathlib import Path

from hub.config import ConfigError, HubConfig, load_hub_config
from hub.roles import ROLES
from hub.service import HubService, StartupError
from shared import __version__, litestream
from shared.logs import setup_logging


def _load_config(path: Path) -> HubConfig | None:
    """The config, or None after printing one line per problem on stderr."""
    try:
        return load_hub_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify-export"]:
        return verify_export(argv[1:])
    parser = argparse.ArgumentParser(prog="vigil-hub", description="Pull edge segments into S3 and serve them.")
    parser.add_argument("--config", "-c", type=Path, help="path to hub.toml")
    parser.add_argument("--hash-token", action="store_true",
                        help="read an API token on stdin (empty: make a new one) and print the sha256 line for "
                             "[[tokens]]")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"vigil-hub {__version__}")
    parser.add_argument("command", nargs="?", default="run", choices=("run", "restore", "replicate", "nodes"),
                        help="run: serve (default); restore: bring hub.db back from its Litestream replica if it "
                             "is missing; replicate: run Litestream for hub.db; nodes: print the fleet as seen "
                             "over MQTT")
    parser.add_argument("--role", choices=ROLES, default="all",
                        help="run: what this process does (default all): api serves the API only, ingest also "
                             "pulls from the edges, jobs also runs exports, retention and hold publication (one "
                             "process at a time, by lease); roles other than all need [catalog] url")
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="nodes: refresh every SECONDS")
    parser.add_argument("--json", action="store_true", help="nodes: one JSON document per refresh")
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
    config = _load_config(args.config)
    if config is None:
        return 2
    if args.check_config:
        rep = config.replication()
        print(f"config ok: {len(config.nodes)} nodes listed, accept_new_nodes={config.ingest.accept_new_nodes}, "
              f"bucket {config.s3.bucket} at {config.s3.endpoint_url}"
              + (f", catalog replica s3://{rep.bucket}/{rep.path}" if rep else ""))
        return 0
    if args.command in ("restore", "replicate"):
        return litestream.run_command(config.replication(), args.command)[0]
    if args.command == "nodes":
        from hub import fleet
        if args.watch is not None and args.watch < 1:
            parser.error("--watch must be at least 1 second")
        try:
            return fleet.main(config, args.watch, args.json)
        except KeyboardInterrupt:
            return 0
    setup_logging(config.hub.log_level, node="hub")
    service = HubService(config, role=args.role)
    try:
        service.run_forever()
    except StartupError as exc:
        logging.getLogger("hub").error("cannot start", extra={"error": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def verify_export(argv: list[str]) -> int:
    """Check an export's signed manifest and every file it lists; exit 0 only if all match."""
    from hub.exports import ManifestSigner, export_prefix, verify_dir, verify_stored
    from hub.store import StoreError

    parser = argparse.ArgumentParser(
        prog="vigil-hub verify-export",
        description="Verify an export: the manifest's Ed25519 signature, then the size and sha256 of every file it "
                    "lists. DIR: a downloaded export folder (manifest.json, manifest.json.sig, the MP4s). ID: the "
                    "export in object storage (needs --config), whose source segments are checked too.")
    parser.add_argument("target", help="export folder or export id")
    parser.add_argument("--public-key", type=Path, help="the hub's export public key (PEM, from "
                                                        "GET /api/v1/exports/public-key)")
    parser.add_argument("--config", "-c", type=Path, help="hub.toml: its signing key and object storage")
    args = parser.parse_args(argv)
    config = None
    if args.config:
        config = _load_config(args.config)
        if config is None:
            return 2
    try:
        if args.public_key:
            public_pem = args.public_key.read_bytes()
        elif config is not None:
            public_pem = ManifestSigner.load(config.exports.signing_key_file, config.hub.data_dir).public_pem
        else:
            parser.error("give --public-key PEM (or --config hub.toml for the hub's own key)")
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the public key: {exc}", file=sys.stderr)
        return 2
    folder = Path(args.target)
    problems: list[str] = []
    try:
        if folder.is_dir():
            problems, manifest = verify_dir(folder, public_pem)
        else:
            if config is None:
                print(f"error: {args.target} is not a folder; to verify an export by id give --config hub.toml",
                      file=sys.stderr)
                return 2
            from hub.store import ObjectStore
            checked = verify_stored(ObjectStore(config.s3), args.target, public_pem)
            if checked is None:
                print(f"error: no export {args.target!r} in bucket {config.s3.bucket} (nothing under "
                      f"{export_prefix(args.target)})", file=sys.stderr)
                return 2
            problems, manifest = checked
    except (OSError, ValueError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problems:
        for problem in problems:
            print(f"FAIL {problem}")
        return 1
    assert manifest is not None
    print(f"OK export {manifest.get('id')}: signature by {manifest.get('signing_key')} verified; "
          f"{len(manifest.get('outputs', []))} files match; {len(manifest.get('sources', []))} sources listed")
    return 0
