"""The worker secret: how a balancer proves to a worker that it is one.

Every balancer and every worker of a deployment is given the same secret
(--worker-secret / WORKER_SECRET). The balancer sends it on every request to a
worker as ``Authorization: Bearer <secret>``; the worker answers any other
caller 401 on every route but /health and /metrics (docs/reliability.md#security).
A client's own Authorization header never reaches a worker: the balancer's
REST proxy forwards only Content-Type and Accept (balancer/proxy.py).
"""
from __future__ import annotations

import argparse
import hmac
from enum import StrEnum

HEADER = "Authorization"
SCHEME = "bearer"
# Shorter secrets are refused at start: the worker's port may face a whole
# network, and a short secret is one an attacker can guess. `openssl rand -hex 32`
# makes 64 characters.
MIN_LENGTH = 16
# Visible ASCII: a header carries it unchanged, and a space would split it.
ALLOWED = frozenset(chr(c) for c in range(0x21, 0x7F))
ENVIRONMENT = "WORKER_SECRET"
FLAG = "--worker-secret"


class Verdict(StrEnum):
    """What a worker makes of a request's credentials."""
    NOT_REQUIRED = "not required"  # the worker has no secret
    ACCEPTED = "accepted"
    MISSING = "missing"  # no Authorization header, or not a Bearer one
    WRONG = "wrong"


def parse_secret(text: str) -> str:
    """The option's parse: empty (no secret) or MIN_LENGTH or more visible
    ASCII characters. The message never repeats the value (parse_config's
    rule for options that hold credentials)."""
    if not text:
        return ""
    if len(text) < MIN_LENGTH or not set(text) <= ALLOWED:
        raise argparse.ArgumentTypeError(
            f"a worker secret is {MIN_LENGTH} or more visible ASCII characters without spaces "
            f"(e.g. `openssl rand -hex 32`), got {len(text)} characters"
            + ("" if set(text) <= ALLOWED else " including others"))
    return text


parse_secret.__name__ = "secret"


def authorization(secret: str) -> dict[str, str]:
    """The header a balancer sends with every request to a worker; none without a secret."""
    return {HEADER: f"Bearer {secret}"} if secret else {}


def header_bytes(value: str) -> bytes:
    """A header value as the bytes that came over the wire. A WSGI server
    hands them over decoded as Latin-1 (PEP 3333), one character per byte;
    anything else (a lone surrogate from a UTF-8 decoder) is encoded back
    without an error, so no header can make the check raise."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def check(header: str | None, secret: str) -> Verdict:
    """The verdict on an Authorization header's value (None: no header),
    compared in constant time with the secret."""
    if not secret:
        return Verdict.NOT_REQUIRED
    scheme, _, credentials = header_bytes(header or "").strip().partition(b" ")
    if scheme.lower() != SCHEME.encode() or not credentials.strip():
        return Verdict.MISSING
    if hmac.compare_digest(credentials.strip(), secret.encode("ascii")):
        return Verdict.ACCEPTED
    return Verdict.WRONG


def refusal(verdict: Verdict) -> str:
    """The 401's message for a refused verdict: what is missing and how to send it."""
    what = "missing worker secret" if verdict is Verdict.MISSING else "wrong worker secret"
    return (f"{what}: only a balancer may call this worker; it sends 'Authorization: Bearer <secret>' "
            f"with the secret every balancer and worker is given ({FLAG} / {ENVIRONMENT})")
