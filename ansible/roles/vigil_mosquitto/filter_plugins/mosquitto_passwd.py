"""Mosquitto 2.0 password file entries for the vigil_mosquitto templates.

A Mosquitto 2.0 hash is `$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>`, with a
12-byte salt and a 64-byte key, as `mosquitto_passwd` writes it (`$6$` is the salted SHA-512 of
Mosquitto 1.x). An entry of the current file that still verifies against the wanted password is
kept as it is, so a second run changes nothing; a new user or a changed password gets a fresh
random salt.

    {% set current = passwd_text | mosquitto_passwd_parse %}
    {{ user }}:{{ password | mosquitto_passwd_hash(current.get(user, ''), 101) }}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

SALT_BYTES = 12
KEY_BYTES = 64


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, KEY_BYTES)


def mosquitto_passwd_verify(password: str, entry: str, iterations: int | None = None) -> bool:
    """Whether `entry` (a `$7$...` hash) is `password`, with `iterations` rounds if given."""
    parts = str(entry).split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7" or not parts[2].isdigit():
        return False
    rounds = int(parts[2])
    if iterations is not None and rounds != int(iterations):
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        key = base64.b64decode(parts[4], validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(_pbkdf2(str(password), salt, rounds), key)


def mosquitto_passwd_hash(password: str, current: str = "", iterations: int = 101) -> str:
    """The hash for `password`: `current` when it verifies (same rounds), else a new one."""
    iterations = int(iterations)
    if current and mosquitto_passwd_verify(password, current, iterations):
        return str(current)
    salt = os.urandom(SALT_BYTES)
    key = _pbkdf2(str(password), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def mosquitto_passwd_parse(text: str) -> dict[str, str]:
    """A password file's `user:hash` lines as a dict (comments and blank lines skipped)."""
    entries: dict[str, str] = {}
    for line in str(text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        user, _, entry = line.partition(":")
        entries[user] = entry
    return entries


class FilterModule:
    """Mosquitto password file filters."""

    def filters(self) -> dict:
        return {
            "mosquitto_passwd_hash": mosquitto_passwd_hash,
            "mosquitto_passwd_parse": mosquitto_passwd_parse,
            "mosquitto_passwd_verify": mosquitto_passwd_verify,
        }
