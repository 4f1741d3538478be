"""What the balancer is serving right now: the connection limit's count,
the frames at workers, and the open WebSockets that shutdown must close."""
from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import aiohttp


@dataclass(eq=False)
class OpenSocket:
    """A WebSocket as shutdown sees it. Its handler closes it: at once when
    idle (shutdown cancels its wait for a message), after the reply when busy."""
    busy: bool = False  # a message of its is being handled
    receive: asyncio.Future[aiohttp.WSMessage] | None = None  # the wait for its next message


@dataclass(eq=False)
class Traffic:
    clients: int = 0  # open WebSockets + HTTP requests in progress: the connection limit
    by_address: Counter[str] = field(default_factory=Counter)  # those clients by address (when limited)
    frames_in_flight: int = 0
    stopping: bool = False
    stopped_at: float | None = None  # time.monotonic() when shutdown began: its --shutdown-timeout runs from there
    sockets: set[OpenSocket] = field(default_factory=set)
