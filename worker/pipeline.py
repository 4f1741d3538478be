"""One frame's path through a worker: VAD, speaker tracking, log line, reply."""
from __future__ import annotations

import time
from dataclasses import dataclass

from voicestream.logline import format_line
from voicestream.replies import FrameReply
from voicestream.stamps import stamp_micros, stamp_time, utc_now

from .accounts import Account, Accounts
from .audio import Audio, dbfs
from .metrics import FrameMetrics
from .speakers.tracker import NO_SPEAKER, SpeakerTracker
from .storage.framelog import FrameLog
from .storage.protocol import FrameRecorder
from .storage.rows import FrameRow
from .vad import VadEngine


@dataclass(frozen=True, slots=True)
class Frame:
    account: str
    audio: Audio
    stream: str = ""
    seq: int | None = None
    # The balancer's stamp for this frame (UTC microseconds), the same on
    # every retry: its log line's timestamp and identity.
    stamp: int | None = None


class FramePipeline:
    def __init__(self, port: int, vad: VadEngine, log: FrameLog, accounts: Accounts,
                 speakers: SpeakerTracker | None = None, records: FrameRecorder | None = None) -> None:
        self.port = port
        self.vad = vad
        self.log = log
        self.accounts = accounts
        self.speakers = speakers
        self.records = records  # --database: every frame's row in the shared store
        self.frames = self.batches = 0  # served so far, for /health (approximate under threads)
        self.metrics = FrameMetrics()  # registered by create_app; the frames route counts outcomes

    def process_many(self, frames: list[Frame]) -> list[FrameReply]:
        """Replies in the order of frames. Frames of distinct accounts share
        one VAD batch; an account's own frames are processed in their order."""
        received, started = stamp_micros(utc_now()), time.perf_counter()
        self.frames += len(frames)
        self.batches += 1
        replies: list[FrameReply] = [{}] * len(frames)
        rows: list[FrameRow] = []
        for indices in rounds(frames):
            with self.accounts.hold(frames[i].account for i in indices) as accounts:
                rows += self._process_locked([(i, frames[i], accounts[frames[i].account]) for i in indices],
                                             received, replies)
        if self.records is not None and rows:
            # One round trip for the batch, outside the account locks, and
            # before any reply: a worker killed after answering loses no row.
            self.records.record(rows)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return replies

    def _process_locked(self, todo: list[tuple[int, Frame, Account]], received: int,
                        replies: list[FrameReply]) -> list[FrameRow]:
        """Fills the replies of todo; the shared-store rows of its new frames."""
        fresh: list[tuple[int, Frame, Account]] = []
        rows: list[FrameRow] = []
        for i, frame, account in todo:
            replayed = account.replayed(frame.stream, frame.seq)
            if replayed is not None:
                replies[i] = replayed
            else:
                fresh.append((i, frame, account))
        results = self.vad.process_many([(account.vad_stream(frame.audio.sample_rate), frame.audio.samples)
                                         for _, frame, account in fresh])
        if fresh:  # no model call when every frame was a retry
            self.metrics.vad_seconds.observe(results[0].model_ms / 1000)
        speakers = (self.speakers.on_frames([(account, frame.audio, result.voice)
                                             for (_, frame, account), result in zip(fresh, results, strict=True)])
                    if self.speakers is not None else [NO_SPEAKER] * len(fresh))
        for (i, frame, account), result, found in zip(fresh, results, speakers, strict=True):
            speaker, score = found.speaker, found.score
            model_ms = result.model_ms + found.encoder_ms
            stamp = frame.stamp if frame.stamp is not None else received
            line = format_line(stamp_time(stamp), result.voice, self.port, model_ms, speaker, score)
            # With the balancer's stamp, the line is written once even if the
            # frame was retried after a worker died between logging and replying.
            logged = self.log.append(frame.account, line, once=frame.stamp is not None)
            reply: FrameReply = {"voice": result.voice, "prob": round(result.prob, 3),
                                 "db": dbfs(frame.audio.samples), "worker": self.port, "ms": round(model_ms, 2)}
            if speaker is not None:
                reply["speaker"], reply["score"] = speaker, None if score is None else round(score, 3)
            if not logged:
                reply["duplicate"] = True
            account.remember(frame.stream, frame.seq, reply)
            replies[i] = reply
            if self.records is not None:
                # Recorded even when this host's log already had the line: the
                # worker that wrote it may have died before its row was stored;
                # the row's key makes a second insert a no-op.
                rows.append(FrameRow(frame.account, frame.stream, stamp if frame.seq is None else frame.seq, stamp,
                                     result.voice, self.port, model_ms, speaker, score))
        return rows


def rounds(frames: list[Frame]) -> list[list[int]]:
    """Frame indices in rounds holding each account at most once, in order."""
    out: list[list[int]] = []
    seen: dict[str, int] = {}
    for i, frame in enumerate(frames):
        r = seen.get(frame.account, 0)
        seen[frame.account] = r + 1
        if r == len(out):
            out.append([])
        out[r].append(i)
    return out
