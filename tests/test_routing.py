"""Rendezvous hashing: stable across processes, minimal movement, even spread."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import pytest

from balancer.routing import pick_worker, rank_workers
from voicetools.paths import REPO

WORKERS = ["http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003"]
ACCOUNTS = [f"acct{i}" for i in range(3000)]


@pytest.mark.integration  # starts Python processes
def test_same_choice_in_other_processes_whatever_their_hash_seed():
    code = ("import json, sys; from balancer.routing import pick_worker; "
            f"print(json.dumps([pick_worker(a, {WORKERS!r}) for a in {ACCOUNTS[:200]!r}]))")
    here = [pick_worker(a, WORKERS) for a in ACCOUNTS[:200]]
    for seed in ("1", "2", "random"):
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert json.loads(out.stdout) == here


def test_order_of_the_worker_list_does_not_matter():
    assert all(pick_worker(a, WORKERS) == pick_worker(a, WORKERS[::-1]) for a in ACCOUNTS[:500])


def test_removing_a_worker_moves_only_its_accounts_to_their_second_choice():
    before = {a: rank_workers(a, WORKERS) for a in ACCOUNTS}
    remaining = [w for w in WORKERS if w != WORKERS[1]]
    for a in ACCOUNTS:
        after = pick_worker(a, remaining)
        if before[a][0] != WORKERS[1]:
            assert after == before[a][0]  # unaffected accounts stay put
        else:
            assert after == before[a][1]  # moved accounts go to their next choice


def test_adding_a_worker_moves_about_a_quarter_of_accounts_and_only_to_it():
    grown = WORKERS + ["http://127.0.0.1:7004"]
    moved = [a for a in ACCOUNTS if pick_worker(a, grown) != pick_worker(a, WORKERS)]
    assert all(pick_worker(a, grown) == grown[-1] for a in moved)
    assert 0.20 < len(moved) / len(ACCOUNTS) < 0.30


def test_accounts_spread_evenly():
    counts = collections.Counter(pick_worker(a, WORKERS) for a in ACCOUNTS)
    assert all(900 < counts[w] < 1100 for w in WORKERS), counts


def test_no_worker_is_an_error():
    with pytest.raises(LookupError):
        pick_worker("a", [])
