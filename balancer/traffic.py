"""What the balancer is serving right now: the connection limit's count,
the frames at workers, and the open WebSockets that shutdown must close."""
from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class OpenSocket:
    """A WebSocket as shutdown sees it. Its handler closes it: at once when
    idle (shutdown ends its wait for a message), after the reply when busy."""
    busy: bool = False  # a message of its is being handled
    # The handler's task while it waits for the client's next message. The
    # wait is ended by cancelling that task, not a task of its own per
    # message: creating one was 6% of a busy balancer's CPU (py-spy, 200
    # VAD streams: ensure_future, two messages a frame).
    waiting: asyncio.Task[Any] | None = None
    interrupted: bool = False  # interrupt() cancelled the wait

    def interrupt(self) -> None:
        """Ends the handler's wait for a message, if it is waiting: a
        message already read but not yet handled is not accepted (no reply)."""
        if self.waiting is not None and not self.interrupted:
            self.interrupted = True
            self.waiting.cancel()


@dataclass(eq=False)
class Traffic:
    clients: int = 0  # open WebSockets + HTTP requests in progress: the connection limit
    by_address: Counter[str] = field(default_factory=Counter)  # those clients by address (when limited)
    frames_in_flight: int = 0
    stopping: bool = False
    stopped_at: float | None = None  # time.monotonic() when shutdown began: its --shutdown-timeout runs from there
    sockets: set[OpenSocket] = field(default_factory=set)
