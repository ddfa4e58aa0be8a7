"""Structured logging: one JSON object per line on stdout.

Use a module logger and pass fields through `extra`:
`log.info("segment closed", extra={"camera": cam, "seq": seq, "bytes": n})`.
`setup_logging(node=...)` stamps every line with the node id. Under systemd (`JOURNAL_STREAM`
set) the timestamp is left out because journald adds its own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Any

from shared.timeutil import now_us, us_to_iso

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message", "asctime", "taskName", "color_message"}  # uvicorn adds an ANSI-coloured copy
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")


def redact(text: str) -> str:
    """Replace the password in every `scheme://user:pass@` inside `text` with `***`."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str | None = None, with_time: bool = True) -> None:
        super().__init__()
        self.node = node
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {}
        if self.with_time:
            entry["ts"] = us_to_iso(int(record.created * 1_000_000)) if record.created else us_to_iso(now_us())
        entry["level"] = record.levelname.lower()
        entry["logger"] = record.name
        if self.node:
            entry["node"] = self.node
        entry["msg"] = redact(record.getMessage())
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS or key.startswith("_"):
                continue
            entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, separators=(",", ":"))


def setup_logging(level: str = "info", node: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(node=node, with_time="JOURNAL_STREAM" not in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log would print one line per request in its own format.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
