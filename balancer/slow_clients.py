"""Slow and idle WebSocket clients: how long a connection may wait for its
client, and what the client's bytes say about its messages.

A message must be whole within --message-timeout of its first byte (a
packet's text part and its binary part together, from the text part), and
a connection waits --idle-timeout for the first byte of its next message.
Only the time the connection spends waiting counts: while the balancer
answers one packet it does not read the next, and that message's clock
starts when it does.

aiohttp's reader hands over whole messages only, and its heartbeat is reset
by any data: a client that sends a byte of a message every few seconds is
invisible to both, and holds its connection (and a --max-connections slot)
for ever. So the client's bytes are looked at on their way in: the frame
headers of RFC 6455 5.2 (payloads skipped) say whether a message is under
way and since when. Nothing is parsed twice but those few header bytes.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

# Close codes (the private range, 4000-4999) and reasons of a connection
# closed for waiting too long: a client can tell them from 1000 (its CLOSE
# answered), 1001 (shutdown) and 1009 (a message too big), and reconnect.
MESSAGE_TIMEOUT_CODE = 4008  # like HTTP's 408
IDLE_CODE = 4000
# How long a connection closed for waiting too long waits for the client's
# own close frame: such a client is slow by definition, and its slot is
# wanted. A prompt client answers a close within a round trip.
CLOSE_WAIT_SECONDS = 2.0
MAX_HEADER = 14  # bytes: 2, an 8-byte length, a 4-byte mask


@dataclass(frozen=True, slots=True)
class Expired:
    """Why a connection was closed for waiting too long."""
    code: int
    reason: str
    kind: str  # "message_timeout" or "idle_timeout": the metrics' reason


class MessageBoundaries:
    """Follows the frame headers in the bytes a client sends: whether a
    message (a text or binary message, all its fragments; or a control
    frame) is under way, and since when."""

    def __init__(self) -> None:
        self._header = bytearray()  # the frame header read so far
        self._payload = 0  # bytes of the current frame's payload still to come
        self._final = False  # the current frame ends its message
        self._control = False  # the current frame is a ping, pong or close
        self._in_message = False  # a text or binary message has begun and not ended
        self.started: float | None = None  # when the first byte of what is under way arrived

    def feed(self, data: bytes, now: float) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._payload:
                taken = min(self._payload, n - i)
                i += taken
                self._payload -= taken
                if not self._payload:
                    self._frame_ended()
                continue
            if self.started is None:
                self.started = now
            if not self._header and n - i >= MAX_HEADER:
                # The whole header is here (the common case): read in place.
                second = data[i + 1]
                length, at = second & 0x7F, i + 2
                if length == 126:
                    length, at = int.from_bytes(data[at:at + 2], "big"), at + 2
                elif length == 127:
                    length, at = int.from_bytes(data[at:at + 8], "big"), at + 8
                self._frame_began(data[i], length)
                i = at + (4 if second & 0x80 else 0)
            else:  # a header cut between chunks: gathered byte by byte
                taken = min(self._header_length() - len(self._header), n - i)
                self._header += data[i:i + taken]
                i += taken
                if len(self._header) < self._header_length():
                    continue
                header, self._header = self._header, bytearray()
                length = header[1] & 0x7F
                if length == 126:
                    length = int.from_bytes(header[2:4], "big")
                elif length == 127:
                    length = int.from_bytes(header[2:10], "big")
                self._frame_began(header[0], length)
            if not self._payload:
                self._frame_ended()

    def _header_length(self) -> int:
        """2 until the second byte is in, then the whole header's: the
        extended payload length (2 or 8 bytes) and the mask (4) follow."""
        if len(self._header) < 2:
            return 2
        second = self._header[1]
        length = second & 0x7F
        return 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if second & 0x80 else 0)

    def _frame_began(self, first: int, length: int) -> None:
        self._payload = length
        self._final = bool(first & 0x80)
        self._control = bool(first & 0x08)  # opcodes 8-15
        if not self._control:  # text, binary or a continuation
            self._in_message = True

    def _frame_ended(self) -> None:
        if self._control:
            if not self._in_message:  # a control frame between messages: whole now
                self.started = None
        elif self._final:
            self._in_message = False
            self.started = None


class ClientBytes(asyncio.Protocol):
    """Sits between a WebSocket's transport and aiohttp's protocol: each
    chunk the client sends is shown to the boundaries, then handed on as it
    came. Installed on the transport before the handshake's answer (the
    client sends nothing before it), so it sees every byte of every frame."""

    def __init__(self, inner: asyncio.Protocol, boundaries: MessageBoundaries, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.boundaries = boundaries
        self.loop = loop

    def data_received(self, data: bytes) -> None:
        self.boundaries.feed(data, self.loop.time())
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ClientClock:
    """One connection's time limits. The handler says when it starts waiting
    for the next message (and when a text part waits for its binary part);
    a timer, re-armed rarely (at most every min(timeouts) seconds), calls
    on_expired once the wait is over a limit. The frame path pays one
    assignment per message for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, boundaries: MessageBoundaries, message_timeout: float,
                 idle_timeout: float) -> None:
        self.loop = loop
        self.boundaries = boundaries
        self.message_timeout = message_timeout
        self.idle_timeout = idle_timeout
        self.waiting_since: float | None = None  # None while a packet is being answered
        self.packet_since: float | None = None  # a text part that waits for its binary part came then
        self.expired: Expired | None = None
        self.on_expired: Callable[[], None] | None = None  # ends the wait
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._arm(self.loop.time())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def waiting(self, interrupt: Callable[[], None]) -> None:
        """The handler waits for the client's next message; interrupt ends
        the wait."""
        self.waiting_since, self.on_expired = self.loop.time(), interrupt

    def busy(self) -> None:
        self.waiting_since = self.on_expired = None

    def deadline(self) -> tuple[float, Expired] | None:
        """When the current wait runs out and why; None while busy."""
        since = self.waiting_since
        if since is None:
            return None
        if self.packet_since is not None:
            return self.packet_since + self.message_timeout, self._incomplete()
        started = self.boundaries.started
        if started is not None:
            return max(started, since) + self.message_timeout, self._incomplete()
        return since + self.idle_timeout, Expired(IDLE_CODE, f"idle for {self.idle_timeout:g} s", "idle_timeout")

    def _incomplete(self) -> Expired:
        return Expired(MESSAGE_TIMEOUT_CODE, f"message incomplete after {self.message_timeout:g} s",
                       "message_timeout")

    def _arm(self, now: float) -> None:
        # Never later than a deadline: one that comes from a message
        # starting after now is at least message_timeout away, one from a
        # wait starting after now at least min(timeouts).
        at = now + min(self.message_timeout, self.idle_timeout)
        due = self.deadline()
        if due is not None:
            at = min(at, due[0])
        self._timer = self.loop.call_at(at, self._check)

    def _check(self) -> None:
        self._timer = None
        now = self.loop.time()
        due = self.deadline()
        if due is not None and due[0] <= now and self.on_expired is not None:
            self.expired = due[1]
            self.on_expired()
            return
        self._arm(now)
