"""The worker pool: which workers are healthy, and the order an account tries them."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from voicestream.worker_secret import ENVIRONMENT as SECRET_ENV
from voicestream.worker_secret import Verdict

from .routing import rank_workers

log = logging.getLogger("balancer.workers")


class WorkerPool:
    """Health from two sources: a /health poll, and failures seen while
    forwarding (a worker that refuses a frame leaves the ring at once). A
    worker is back in the ring as soon as its /health answers 200 again; a
    draining one (SIGTERM) answers 503. Only the poll brings a worker back.

    A /health that times out is ambiguous - hung, or only busy - and moving
    an account loses its streaming state, so a worker leaves the ring after
    SLOW_STRIKES timeouts in a row; a refused connection or a non-200 answer
    takes it out at once. So does a /health that says the worker refuses
    this balancer's worker secret (missing or wrong): every frame would get
    401 there.
    """

    SLOW_STRIKES = 2
    # Accounts whose rendezvous order is kept; past this the cache starts over.
    MAX_ORDERS = 100_000

    def __init__(self, workers: tuple[str, ...]) -> None:
        self.workers = workers
        self._healthy = {worker: False for worker in workers}  # in the ring once /health answers
        self._strikes = {worker: 0 for worker in workers}
        self.exits = {worker: 0 for worker in workers}  # times each left the ring (/metrics)
        # What each worker's last /health said of its database: shown on the
        # balancer's /health, so one probe tells whether results are being
        # recorded or spooled.
        self._database: dict[str, dict[str, Any]] = {}
        # Why each worker refuses this balancer's secret, logged once per
        # change: a worker that refuses it from the start never "leaves" the
        # ring, and would otherwise be down without a word.
        self._refusals: dict[str, str] = {}
        self._orders: dict[str, tuple[str, ...]] = {}
        # Called with a worker that just left the ring: its link sends the
        # frames waiting for it elsewhere (background.py).
        self.on_exit: list[Callable[[str], None]] = []

    def healthy(self) -> list[str]:
        return [w for w in self.workers if self._healthy[w]]

    def ranked(self, account: str) -> list[str]:
        """The account's healthy workers, first rendezvous choice first.

        The order over all workers never changes, so it is hashed once per
        account (a blake2b per worker per frame was 2-3% of a busy balancer)
        and only filtered by health per frame: the same list as ranking the
        healthy workers alone."""
        order = self._orders.get(account)
        if order is None:
            if len(self._orders) >= self.MAX_ORDERS:
                self._orders.clear()
            order = self._orders[account] = tuple(rank_workers(account, self.workers))
        return [worker for worker in order if self._healthy[worker]]

    def mark(self, worker: str, healthy: bool, reason: str = "") -> None:
        if self._healthy[worker] != healthy:
            self._healthy[worker] = healthy
            if healthy:
                log.info("worker %s is in the ring", worker)
            else:
                self.exits[worker] += 1
                log.warning("worker %s left the ring: %s", worker, reason)
                for listener in self.on_exit:
                    listener(worker)

    async def check(self, session: aiohttp.ClientSession, timeout: float = 1.0) -> None:
        await asyncio.gather(*(self._check_one(session, w, timeout) for w in self.workers))

    async def _check_one(self, session: aiohttp.ClientSession, worker: str, timeout: float) -> None:
        try:
            async with session.get(f"{worker}/health", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                ok = resp.status == 200
                reason = f"/health answered {resp.status}"
                if ok:
                    health = await resp.json(content_type=None)
                    self._remember_database(worker, health)
                    refused = secret_refused(health)
                    if refused:
                        ok, reason = False, refused
                    self._note_refusal(worker, refused)
        except TimeoutError:
            self._strikes[worker] += 1
            if self._strikes[worker] >= self.SLOW_STRIKES:
                self.mark(worker, False, f"/health took over {timeout:g} s {self._strikes[worker]} times in a row")
            return
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a body that is not JSON
            ok, reason = False, f"/health failed: {exc.__class__.__name__}"
        self._strikes[worker] = 0
        self.mark(worker, ok, reason)

    async def poll(self, session: aiohttp.ClientSession, interval: float, timeout: float) -> None:
        """Forever: a dead poller would keep a recovered worker out of the ring."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check(session, timeout)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health check failed; polling on")

    def _note_refusal(self, worker: str, refused: str) -> None:
        if refused and self._refusals.get(worker) != refused:
            log.error("worker %s turns this balancer away (401 on every frame): %s", worker, refused)
        self._refusals[worker] = refused

    def _remember_database(self, worker: str, health: object) -> None:
        database = health.get("database") if isinstance(health, dict) else None
        if isinstance(database, dict):
            self._database[worker] = database
        else:
            self._database.pop(worker, None)

    def database_status(self) -> dict[str, dict[str, Any]]:
        """Per worker, the database state its last healthy /health reported."""
        return {w: self._database[w] for w in self.workers if w in self._database}

    def status(self) -> dict[str, str]:
        return {w: ("up" if self._healthy[w] else "down") for w in self.workers}


def secret_refused(health: object) -> str:
    """Why a worker's /health says it refuses this balancer's requests (its
    worker secret missing or wrong), or "" (accepted, not required, or a
    worker too old to say)."""
    verdict = health.get("worker_secret") if isinstance(health, dict) else None
    if verdict == Verdict.MISSING:
        return ("it requires a worker secret and this balancer sends none: start the balancer with the workers' "
                f"{SECRET_ENV}")
    if verdict == Verdict.WRONG:
        return f"this balancer's worker secret is not the worker's: balancers and workers need the same {SECRET_ENV}"
    return ""
