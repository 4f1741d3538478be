"""One frame to its account's worker, failing over to the next rendezvous
choice, so a client gets a reply as long as any worker is up.

Exactly one log line per frame, across retries: the balancer stamps each
frame once (FrameClock) and sends the same stamp with every attempt. A
worker writes the frame's log line under a lock on the account's log, and
skips it when a line with that stamp is already there - written by a worker
that was killed after logging but before replying, or by a slow one that
the balancer stopped waiting for.
"""
from __future__ import annotations

import logging
import time

import aiohttp
from aiohttp import web

from voicestream.batch import FrameMeta
from voicestream.replies import FrameReply
from voicestream.stamps import stamp_text

from .keys import CLOCK, CONFIG, LINKS, POOL, TRAFFIC
from .links import UNAVAILABLE_STATUSES, BatchFailed, NotSent, WorkerLink
from .metrics import METRICS, UNCOUNTED, BalancerMetrics
from .packets import Packet
from .workers import WorkerPool

log = logging.getLogger("balancer.forward")

NO_WORKER_PREFIX = "no worker available"
NO_WORKER = f"{NO_WORKER_PREFIX}: every worker is down, try again shortly"


async def forward(app: web.Application, packet: Packet, stream: str, seq: int,
                  reached: list[str] | None = None) -> FrameReply:
    """The reply for a client's frame, stamped now; counted while in flight.
    reached: see forward_frame."""
    traffic, metrics = app[TRAFFIC], app[METRICS]
    traffic.frames_in_flight += 1
    metrics.frames_received.inc()
    taken = time.perf_counter()
    try:
        return await forward_frame(app[POOL], app[LINKS], packet, stream, seq, app[CLOCK].next(),
                                   app[CONFIG].forward_timeout, metrics, reached)
    finally:
        traffic.frames_in_flight -= 1
        metrics.frame_seconds.observe(time.perf_counter() - taken)


async def forward_frame(pool: WorkerPool, links: dict[str, WorkerLink], packet: Packet, stream: str,
                        seq: int, stamp: int, timeout: float, metrics: BalancerMetrics = UNCOUNTED,
                        reached: list[str] | None = None) -> FrameReply:
    """The reply for this frame: the worker's, or an error naming the problem.
    Each worker the frame may have reached (it answered, or failed after the
    request left) is appended to reached: those hold the stream's state, which
    its close must reach (closing.py)."""
    reached = [] if reached is None else reached
    reply: FrameReply = {"account": packet.account, "seq": seq}
    meta = FrameMeta(packet.account, stream, seq, stamp)
    problems: list[str] = []
    maybe_processed = False  # a failed attempt may have reached its worker
    ranked = pool.ranked(packet.account)
    for worker in ranked:
        if problems:  # the last attempt failed
            metrics.retries.inc()
        sent = time.perf_counter()
        try:
            status, answer = await links[worker].send(meta, packet.wav)
        except TimeoutError:
            metrics.failures[worker, "timeout"].inc()
            # Slow is not dead: the frame goes to the next choice, and the
            # /health poll decides whether the worker leaves the ring.
            log.warning("worker %s did not answer frame %s/%d within %g s; trying the next",
                        worker, packet.account, seq, timeout)
            problems.append(f"timed out after {timeout:g} s")
            maybe_processed = True
            reached.append(worker)
            continue
        except BatchFailed as exc:
            # Failed mid-batch: maybe logged (the stamp keeps the next
            # worker from logging it again). It stays in the ring: a frame
            # that fails on every worker must not take them all out; /health
            # decides.
            metrics.failures[worker, "failed"].inc()
            log.warning("worker %s %s to a batch with frame %s/%d; trying the next", worker, exc,
                        packet.account, seq)
            problems.append(str(exc))
            maybe_processed = True
            reached.append(worker)
            continue
        except NotSent as exc:  # it waited for a worker that stalled or left the ring
            metrics.failures[worker, "not_sent"].inc()
            problems.append(str(exc))
            continue
        except aiohttp.ClientConnectorError as exc:  # refused: the frame never left
            metrics.failures[worker, "refused"].inc()
            pool.mark(worker, False, f"forward failed: {exc.__class__.__name__}")
            problems.append("refused the connection")
            continue
        except aiohttp.ClientError as exc:  # reset, disconnected mid-reply
            metrics.failures[worker, "error"].inc()
            pool.mark(worker, False, f"forward failed: {exc.__class__.__name__}")
            problems.append(f"failed ({exc.__class__.__name__})")
            maybe_processed = True
            reached.append(worker)
            continue
        except ValueError:
            reached.append(worker)
            metrics.answered["unreadable"].inc()
            reply["error"] = f"worker {worker} gave an unreadable reply"
            return reply
        metrics.forward_seconds[worker].observe(time.perf_counter() - sent)
        if status in UNAVAILABLE_STATUSES:
            metrics.failures[worker, "unavailable"].inc()
            pool.mark(worker, False, f"/frames answered {status}")
            # A worker's own reason (a full disk) names no path: the client
            # may read it.
            why = answer.get("error")
            problems.append(f"answered {status}" + (f" ({why})" if why else ""))
            continue
        reached.append(worker)
        metrics.worker_answered(status, answer)
        if worker != ranked[0] or len(ranked) < len(pool.workers):  # maybe not the account's first choice
            metrics.rerouted(pool.workers, packet.account, worker)
        reply.update(answer)
        if "error" not in answer and "time" not in answer:
            # The frame's log line starts with this. A duplicate answered
            # from a worker's memory has its own: its line's, the stamp of
            # its first attempt (a resend through another balancer has a new one).
            reply["time"] = stamp_text(stamp)
        return reply
    metrics.answered["no_worker"].inc()
    if not problems:
        reply["error"] = NO_WORKER
    else:
        # Clients see what went wrong, not the workers' internal addresses.
        reply["error"] = f"{NO_WORKER_PREFIX}: tried {len(problems)}: {', '.join(problems)}"
        if maybe_processed:  # e.g. killed after logging it: the client can look for its line
            reply["error"] += "; the frame may have been logged, at the reply's time"
            reply["time"] = stamp_text(stamp)
    return reply
