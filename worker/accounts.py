"""Per-account streaming state held by one worker process."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .vad import VadStream


@dataclass(eq=False)
class Account:
    code: str
    # Held while one frame of this account is processed: frames of an account
    # run one at a time, in arrival order, and see each other's state.
    lock: threading.Lock = field(default_factory=threading.Lock)
    vad: VadStream | None = None
    speech: Any = None  # the speaker tracker's rolling buffer (worker/speakers)
    # stream id -> (last seq, its reply): a retried frame is answered, not redone.
    replies: dict[str, tuple[int, dict]] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)

    def vad_stream(self, sample_rate: int) -> VadStream:
        if self.vad is None or self.vad.sample_rate != sample_rate:
            self.vad = VadStream(sample_rate)
        return self.vad

    def replayed(self, stream: str, seq: int | None) -> dict | None:
        """The reply already given to this (stream, seq), if any."""
        if seq is None or stream not in self.replies:
            return None
        last_seq, reply = self.replies[stream]
        if seq == last_seq:
            return {**reply, "duplicate": True}
        if seq < last_seq:
            return {"error": f"frame seq {seq} of stream {stream} was already processed", "duplicate": True}
        return None

    def remember(self, stream: str, seq: int | None, reply: dict) -> None:
        if seq is not None:
            self.replies[stream] = (seq, reply)


class Accounts:
    """Accounts seen by this worker; idle ones are forgotten after idle_seconds."""

    MAX_STREAMS_REMEMBERED = 64

    def __init__(self, idle_seconds: float = 300.0) -> None:
        self.idle_seconds = idle_seconds
        self._accounts: dict[str, Account] = {}
        self._lock = threading.Lock()
        self._next_sweep = time.monotonic() + idle_seconds

    def get(self, code: str) -> Account:
        now = time.monotonic()
        with self._lock:
            account = self._accounts.get(code)
            if account is None:
                account = self._accounts[code] = Account(code)
            account.last_seen = now
            if len(account.replies) > self.MAX_STREAMS_REMEMBERED:
                account.replies.pop(next(iter(account.replies)))
            if now >= self._next_sweep:
                self._sweep(now)
            return account

    def _sweep(self, now: float) -> None:
        idle = [code for code, a in self._accounts.items()
                if now - a.last_seen > self.idle_seconds and not a.lock.locked()]
        for code in idle:
            del self._accounts[code]
        self._next_sweep = now + self.idle_seconds

    def __len__(self) -> int:
        return len(self._accounts)
