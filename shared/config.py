"""Turning a TOML file plus `VIGIL_*` environment overrides into frozen dataclasses.

`load(cls, path)` walks the dataclass fields, converts and checks every value, rejects unknown
keys, and raises one `ConfigError` that lists every problem as `key.path: what is wrong`.
Field metadata carries the checks: `check=callable` returns an error string or None.

Environment overrides: `VIGIL_<SECTION>__<KEY>=value` (upper case, `__` between levels,
array items by index: `VIGIL_CAMERAS__0__URL`). They win over the file. Values are parsed with
the field's type, so `VIGIL_RECORDING__SEGMENT_SECONDS=10` is an int.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
ENV_PREFIX = "VIGIL_"
# an id (node, camera): always `fullmatch` it (`match` with `$` lets a trailing newline through)
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class ConfigError(Exception):
    """Every problem found in a config, one `key.path: message` per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def ascii_digits(text: str) -> bool:
    """`text` is one or more of 0-9 (`str.isdigit` also takes "²" and "٣", which `int` refuses or reads)."""
    return text.isascii() and text.isdigit()


def check_id(value: str) -> str | None:
    if not ID_PATTERN.fullmatch(value):
        return f"{value!r} is not a valid id (lower-case letters, digits and '-', 1-63 chars, not starting with '-')"
    return None


def check_listen(value: str) -> str | None:
    """HOST:PORT for a server to listen on."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not ascii_digits(port) or not 0 < int(port) < 65536:
        return f"{value!r} is not HOST:PORT"
    return None


def check_http_url(url: str) -> str | None:
    """An http(s) URL, or empty (meaning: derive a default)."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL"
    return None


def check_abs_path(value: str) -> str | None:
    """An absolute file path, or empty (meaning: not used)."""
    return None if not value or value.startswith("/") else f"{value!r} must be an absolute path (or empty)"


def between(lo: float, hi: float) -> Callable[[float], str | None]:
    """A check that a number lies in [lo, hi]."""
    def check(value: float) -> str | None:
        return None if lo <= value <= hi else f"must be between {lo:g} and {hi:g}, got {value:g}"
    return check


def field(default: Any = dataclasses.MISSING, *, check: Callable[[Any], str | None] | None = None,
          doc: str = "", secret: bool = False, **kw: Any) -> Any:
    """A dataclass field with an optional check and a doc line for the config reference."""
    meta = {"check": check, "doc": doc, "secret": secret}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta, repr=not secret, **kw)
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, repr=not secret, **kw)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], path, problems)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return []
        return [_convert(v, item_tp, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected a table")
            return None
        return _build(tp, value, path, problems)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        problems.append(f"{path}: expected true or false, got {value!r}")
        return None
    if tp is int:
        if isinstance(value, bool):
            problems.append(f"{path}: expected an integer, got {value!r}")
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        problems.append(f"{path}: expected an integer, got {value!r}")
        return None
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        problems.append(f"{path}: expected a number, got {value!r}")
        return None
    if tp is str:
        if isinstance(value, str):
            return value
        problems.append(f"{path}: expected a string, got {value!r}")
        return None
    if tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
        problems.append(f"{path}: expected a path, got {value!r}")
        return None
    raise TypeError(f"unsupported config type {_type_name(tp)} at {path}")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, problems: list[str]) -> T | None:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            problems.append(f"{prefix + '.' if prefix else ''}{key}: unknown key")
    values: dict[str, Any] = {}
    before = len(problems)
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name in data:
            if f.metadata.get("secret"):  # never echo a secret, even a mistyped one
                found: list[str] = []
                value = _convert(data[name], hints[name], path, found)
                problems.extend(f"{path}: expected a {_type_name(hints[name])} (value not shown)" for _ in found)
            else:
                value = _convert(data[name], hints[name], path, problems)
            check = f.metadata.get("check")
            if value is not None and check is not None:
                error = check(value)
                if error:
                    problems.append(f"{path}: {error}")
            values[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{path}: missing (required)")
    if len(problems) > before:
        return None
    try:
        return cls(**values)
    except ConfigError as exc:  # cross-field checks in __post_init__ name their own keys
        problems.extend(exc.problems)
        return None
    except ValueError as exc:
        problems.append(str(exc))
        return None


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX):].split("__")]
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not ascii_digits(part) or int(part) >= len(node):
                    break
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
                continue
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict | list):
                    break


def _apply_credentials(data: dict[str, Any], directory: str) -> None:
    """systemd credentials (`LoadCredential=http.token:/etc/vigil/secrets/edge-http-token`): each
    file named `SECTION.KEY` in `$CREDENTIALS_DIRECTORY` sets that key to the file's text, so
    secrets stay out of the config file and the environment."""
    try:
        entries = sorted(Path(directory).iterdir())
    except OSError:
        return
    for entry in entries:
        section, dot, key = entry.name.partition(".")
        if not dot or not section or not key or "." in key or not entry.is_file():
            continue
        try:
            value = entry.read_text().strip()
        except (OSError, UnicodeError) as exc:
            raise ConfigError([f"credential {entry.name}: cannot read {entry} ({exc})"]) from None
        if not value:
            continue  # an empty credential file means "not set" (units name every file they may use)
        target = data.setdefault(section, {})
        if isinstance(target, dict):
            target[key] = value


def load(cls: type[T], path: Path, environ: Mapping[str, str] | None = None) -> T:
    """Read `path` as TOML, apply systemd credentials and environment overrides, and build `cls`;
    raise ConfigError."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config ({exc.strerror})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML ({exc})"]) from None
    environ = os.environ if environ is None else environ
    if environ.get("CREDENTIALS_DIRECTORY"):
        _apply_credentials(data, environ["CREDENTIALS_DIRECTORY"])
    return build(cls, data, environ)


def build(cls: type[T], data: dict[str, Any], environ: Mapping[str, str] | None = None) -> T:
    _apply_env(data, environ or {})
    problems: list[str] = []
    result = _build(cls, data, "", problems)
    if problems or result is None:
        raise ConfigError(problems or ["config: invalid"])
    return result


def reference(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, doc) for every field, for the README's config reference."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if dataclasses.is_dataclass(tp) or inner:
            rows.extend(reference(inner[0] if inner else tp, path))
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "required"
        rows.append((path, default, f.metadata.get("doc", "")))
    return rows
