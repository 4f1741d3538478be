"""One frame's path through a worker: VAD, speaker tracking, log line, reply."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from voicestream.events import SPEECH_END, SPEECH_START, TRACKER_RESTART, Event
from voicestream.logline import format_line
from voicestream.replies import FrameReply
from voicestream.stamps import stamp_micros, stamp_text, stamp_time, utc_now

from .accounts import Account, Accounts
from .audio import Audio, dbfs
from .metrics import FrameMetrics
from .speakers.tracker import NO_SPEAKER, ClosedSegment, FrameRef, SpeakerFrame, SpeakerTracker
from .storage.framelog import FrameLog
from .storage.protocol import FrameRecorder
from .storage.rows import FinalLabel, FrameRow
from .storage.segments import SegmentLog
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
                 speakers: SpeakerTracker | None = None, records: FrameRecorder | None = None,
                 segments: SegmentLog | None = None) -> None:
        self.port = port
        self.vad = vad
        self.log = log
        self.segments = segments if segments is not None else SegmentLog(log.directory)
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
        finals: list[FinalLabel] = []
        for indices in rounds(frames):
            with self.accounts.hold(frames[i].account for i in indices) as accounts:
                rows += self._process_locked([(i, frames[i], accounts[frames[i].account]) for i in indices],
                                             received, replies, finals)
        if self.records is not None and (rows or finals):
            # One round trip for the batch, outside the account locks, and
            # before any reply: a worker killed after answering loses no row.
            self.records.record(rows, finals)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return replies

    def close_stream(self, code: str, stream: str) -> list[Event]:
        """A stream's CLOSE: its account's pending final labels made final
        now; the events owed to that stream."""
        finals: list[FinalLabel] = []
        with self.accounts.hold([code]) as accounts:
            account = accounts[code]
            closed = self.speakers.close(account) if self.speakers is not None else []
            events = account.collect(stream) + self._segments(account, stream, closed, finals)
        if self.records is not None and finals:
            self.records.record([], finals)
        return events

    def _process_locked(self, todo: list[tuple[int, Frame, Account]], received: int,
                        replies: list[FrameReply], finals: list[FinalLabel]) -> list[FrameRow]:
        """Fills the replies of todo; the shared-store rows of its new frames
        (and in finals, the final labels its frames made)."""
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
        stamps = [frame.stamp if frame.stamp is not None else received for _, frame, _ in fresh]
        speakers = (self.speakers.on_frames([
            SpeakerFrame(account, FrameRef(frame.stream, frame.seq if frame.seq is not None else stamp, stamp),
                         frame.audio, result.voice)
            for (_, frame, account), result, stamp in zip(fresh, results, stamps, strict=True)])
            if self.speakers is not None else [NO_SPEAKER] * len(fresh))
        for (i, frame, account), result, found, stamp in zip(fresh, results, speakers, stamps, strict=True):
            speaker, score = found.speaker, found.score
            model_ms = result.model_ms + found.encoder_ms
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
            events = self._frame_events(frame, account, result.voice, stamp)
            if found.change is not None:
                events.append(found.change)
            events += self._segments(account, frame.stream, found.segments, finals)
            if events:
                reply["events"] = events
            account.remember(frame.stream, frame.seq, reply, stamp)
            replies[i] = reply
            if self.records is not None:
                # Recorded even when this host's log already had the line: the
                # worker that wrote it may have died before its row was stored;
                # the row's key makes a second insert a no-op.
                rows.append(FrameRow(frame.account, frame.stream, stamp if frame.seq is None else frame.seq, stamp,
                                     result.voice, self.port, model_ms, speaker, score))
        return rows

    @staticmethod
    def _frame_events(frame: Frame, account: Account, voice: int, stamp: int) -> list[Event]:
        """The frame's own events: a restart of a stream this worker did not
        know, speech starting or ending; and the ones kept for its stream."""
        events = account.collect(frame.stream)
        time_text = stamp_text(stamp)
        seq = frame.seq if frame.seq is not None else stamp
        if frame.seq is not None and frame.seq > 1 and frame.stream not in account.replies:
            events.append({"type": TRACKER_RESTART, "seq": seq, "time": time_text,
                           "reason": "this worker had no state for the stream (another worker served it, or it "
                                     "was idle too long): VAD and speaker tracking start afresh at this frame"})
        if voice and account.voice != 1:
            events.append({"type": SPEECH_START, "seq": seq, "time": time_text})
        elif not voice and account.voice == 1:
            events.append({"type": SPEECH_END, "seq": seq, "time": time_text})
        account.voice = voice
        return events

    def _segments(self, account: Account, stream: str, closed: Sequence[ClosedSegment],
                  finals: list[FinalLabel]) -> list[Event]:
        """Closed segments into the account's record (segments file, final
        labels for the rows); the events of stream's, others kept for theirs."""
        if not closed:
            return []
        self.segments.append(account.code, [(c.stream, c.event) for c in closed])
        mine: list[Event] = []
        for c in closed:
            finals.append(FinalLabel.of(account.code, c.stream, c.event))
            if c.stream == stream:
                mine.append(c.event)
            else:
                account.post(c.stream, [c.event])
        return mine


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
