"""A --database URL checked before anything connects: a malformed one stops
the worker at start with a message naming the problem; an unreachable one
does not (that is found out by connecting, later)."""
from __future__ import annotations

import argparse
import re

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

SCHEMES = ("postgresql://", "postgres://")  # libpq knows them in lower case only
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
_USER_PASSWORD = re.compile(r"^([a-z]+://[^:/?#@]*:)([^@/?#]*)@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&]*)")


class DatabaseUrlError(ValueError):
    """A malformed --database URL; the message names the problem."""


def redact(url: str) -> str:
    """The URL without its password, for messages, logs and /health."""
    return _QUERY_PASSWORD.sub(r"\1***", _USER_PASSWORD.sub(r"\1***@", url))


def check_url(url: str) -> str:
    """The URL if it is a well-formed postgresql:// URL, else DatabaseUrlError."""
    if not url.strip():
        raise DatabaseUrlError("database URL is empty: give postgresql://USER@HOST:PORT/DATABASE")
    shown = redact(url)
    scheme = url.split("://", 1)[0] + "://" if "://" in url else ""
    if scheme not in SCHEMES:
        what = f"scheme {scheme!r}" if scheme else "no scheme"
        raise DatabaseUrlError(f"database URL {shown!r} has {what}: it must start with postgresql:// "
                               "(or postgres://), as in postgresql://USER@HOST:PORT/DATABASE")
    try:
        params = conninfo_to_dict(url)
    except ProgrammingError as exc:
        lines = str(exc).strip().splitlines()
        raise DatabaseUrlError(f"database URL {shown!r} is malformed: "
                               f"{_hide_passwords(lines[0] if lines else 'libpq cannot parse it', url)}") from None
    for port in str(params.get("port", "")).split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise DatabaseUrlError(f"database URL {shown!r} has port {port!r}: a port is a number 1-65535")
    timeout = str(params.get("connect_timeout", "0"))
    if not timeout.isdigit():
        raise DatabaseUrlError(f"database URL {shown!r} has connect_timeout {timeout!r}: give whole seconds")
    sslmode = params.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        raise DatabaseUrlError(f"database URL {shown!r} has sslmode {sslmode!r}: "
                               f"use one of {', '.join(sorted(SSL_MODES))}")
    return url


def parse_database_url(text: str) -> str:
    """--database's parse (voicestream/options.py): empty means the embedded
    stores; otherwise a checked URL, or argparse stops the worker naming the
    problem."""
    if not text:
        return ""
    try:
        return check_url(text)
    except DatabaseUrlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hide_passwords(text: str, url: str) -> str:
    # libpq's message may quote the malformed part, which may be the password.
    secrets = [m[2] for m in _USER_PASSWORD.finditer(url)] + [m[2] for m in _QUERY_PASSWORD.finditer(url)]
    for secret in filter(None, secrets):
        text = text.replace(secret, "***")
    return text
