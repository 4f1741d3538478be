"""Rendezvous (highest random weight) hashing of accounts over workers.

Every balancer replica computes the same ranking from the same worker list,
and removing a worker moves only the accounts whose first choice it was.
The hash is blake2b, never Python's per-process salted hash().
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable


def rendezvous_weight(account: str, worker: str) -> int:
    digest = hashlib.blake2b(f"{worker}\x00{account}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank_workers(account: str, workers: Iterable[str]) -> list[str]:
    """Workers in the order this account should try them: first choice first."""
    return sorted(workers, key=lambda worker: (rendezvous_weight(account, worker), worker), reverse=True)


def pick_worker(account: str, workers: Iterable[str]) -> str:
    ranked = rank_workers(account, workers)
    if not ranked:
        raise LookupError("no worker available")
    return ranked[0]
