"""One frame's path through a worker: VAD, speaker tracking, its record
(log line, segments, database row), reply.

A frame is answered ok only once its record is written. One that could not
be is answered with the reason (storage/guard.py's Fault): a fault of the
whole worker (a full disk, --min-free-mb, an unusable --log-dir, a spool that
cannot be written) stops the rest of the batch too - frames not yet
processed are not processed, so another worker can take them whole - while a
fault of one account's files fails only that account's frames. A frame that
was processed but not recorded is held (held.py) for its resend.
"""
from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from voicestream.events import SPEECH_END, SPEECH_START, TRACKER_RESTART, Event
from voicestream.logline import stamp_line
from voicestream.replies import FrameReply
from voicestream.stamps import stamp_micros, stamp_text, utc_now

from .accounts import Account, Accounts
from .audio import Audio, dbfs
from .held import HeldFrame, HeldFrames
from .metrics import FrameMetrics
from .speakers.tracker import NO_SPEAKER, ClosedSegment, FrameRef, SpeakerFrame, SpeakerTracker
from .storage.appends import RecordWriteError
from .storage.framelog import FrameLog
from .storage.guard import DiskGuard, Fault
from .storage.protocol import FrameRecorder, RowsNotStored
from .storage.rows import FinalLabel, FrameRow
from .storage.segments import SegmentLog
from .vad import VadEngine

log = logging.getLogger("worker.record")


@dataclass(frozen=True, slots=True)
class Frame:
    account: str
    audio: Audio
    stream: str = ""
    seq: int | None = None
    # The balancer's stamp for this frame (UTC microseconds), the same on
    # every retry: its log line's timestamp and identity.
    stamp: int | None = None


class Outcome(enum.Enum):
    OK = "ok"  # processed and recorded
    DUPLICATE = "duplicate"  # answered from memory, or its line was already logged
    PASSED = "passed"  # an older seq of its stream than one already processed: an error reply
    UNRECORDED = "unrecorded"  # its record could not be written: FrameAnswer.fault says why


@dataclass(frozen=True, slots=True)
class FrameAnswer:
    reply: FrameReply
    outcome: Outcome
    fault: Fault | None = None  # UNRECORDED only


class RecordFailed(Exception):
    """A stream's close whose segments could not be recorded (fault says why)."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.message)
        self.fault = fault


def unrecorded(fault: Fault) -> FrameAnswer:
    return FrameAnswer({"error": fault.message}, Outcome.UNRECORDED, fault)


# What a batch's answer slots hold until each is filled.
_UNANSWERED = FrameAnswer({}, Outcome.OK)


class FramePipeline:
    def __init__(self, port: int, vad: VadEngine, log: FrameLog, accounts: Accounts,
                 speakers: SpeakerTracker | None = None, records: FrameRecorder | None = None,
                 segments: SegmentLog | None = None, guard: DiskGuard | None = None) -> None:
        self.port = port
        self.vad = vad
        self.log = log
        self.segments = segments if segments is not None else SegmentLog(log.directory)
        self.accounts = accounts
        self.speakers = speakers
        self.records = records  # --database: every frame's row in the shared store
        self.guard = guard if guard is not None else DiskGuard.of_log_dir(log.directory)
        self.held = HeldFrames()
        self.frames = self.batches = 0  # served so far, for /health (approximate under threads)
        self.metrics = FrameMetrics()  # registered by create_app; the frames route counts outcomes

    def process_many(self, frames: list[Frame]) -> list[FrameReply]:
        """The replies of answer(frames), for callers that need no outcome."""
        return [answer.reply for answer in self.answer(frames)]

    def answer(self, frames: list[Frame]) -> list[FrameAnswer]:
        """Answers in the order of frames. Frames of distinct accounts share
        one VAD batch; an account's own frames are processed in their order."""
        received, started = stamp_micros(utc_now()), time.perf_counter()
        self.frames += len(frames)
        self.batches += 1
        answers = [_UNANSWERED] * len(frames)  # every slot is filled below
        rows: list[tuple[int, HeldFrame]] = []
        finals: list[FinalLabel] = []
        for indices in rounds(frames):
            fault = self.guard.current  # set by a failed write of an earlier round
            if fault is not None:
                for i in indices:  # not processed: another worker can take them
                    answers[i] = unrecorded(fault)
                continue
            with self.accounts.hold(frames[i].account for i in indices) as accounts:
                self._process_locked([(i, frames[i], accounts[frames[i].account]) for i in indices],
                                     received, answers, rows, finals)
        if self.records is not None and (rows or finals):
            self._store_rows(self.records, rows, finals, answers)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return answers

    def close_stream(self, code: str, stream: str) -> list[Event]:
        """A stream's CLOSE: its account's pending final labels made final
        now; the events owed to that stream. RecordFailed (nothing closed,
        while the worker cannot write) if their record could not be written."""
        fault = self.guard.fault()
        if fault is not None:
            raise RecordFailed(fault)  # the labels stay pending: a later close or frame makes them final
        finals: list[FinalLabel] = []
        with self.accounts.hold([code]) as accounts:
            account = accounts[code]
            closed = self.speakers.close(account) if self.speakers is not None else []
            try:
                events = self._segments(account, stream, closed, finals)
            except RecordWriteError as exc:
                log.error("the close of stream %s of account %s made %d segments final that cannot be recorded: %s",
                          stream[:64], code, len(closed), exc)
                raise RecordFailed(self.guard.failed(exc)) from exc
            events = account.collect(stream) + events
        if self.records is not None and finals:
            try:
                self.records.record([], finals)
            except RowsNotStored as exc:
                raise RecordFailed(self.guard.failed(exc)) from exc
        return events

    def _process_locked(self, todo: list[tuple[int, Frame, Account]], received: int,
                        answers: list[FrameAnswer], rows: list[tuple[int, HeldFrame]],
                        finals: list[FinalLabel]) -> None:
        """Fills the answers of todo; in rows the frames whose rows are due
        (with --database), in finals the final labels its frames made."""
        fresh: list[tuple[int, Frame, Account]] = []
        for i, frame, account in todo:
            held = self.held.get(frame.account, frame.stream, frame.seq)
            if held is not None:  # processed before, its record not (all) written then
                answers[i] = self._record_again(i, held, account, rows, finals)
                continue
            replayed = account.replayed(frame.stream, frame.seq)
            if replayed is not None:
                answers[i] = FrameAnswer(replayed, Outcome.PASSED if "error" in replayed else Outcome.DUPLICATE)
            else:
                fresh.append((i, frame, account))
        results = self.vad.process_many([(account.vad_stream(frame.audio.sample_rate), frame.audio.samples)
                                         for _, frame, account in fresh])
        if fresh:  # no model call when every frame was a retry
            self.metrics.vad_seconds.observe(results[0].model_ms / 1000)
        refs = [frame_ref(frame, received) for _, frame, _ in fresh]
        speakers = (self.speakers.on_frames([
            SpeakerFrame(account, ref, frame.audio, result.voice)
            for (_, frame, account), result, ref in zip(fresh, results, refs, strict=True)])
            if self.speakers is not None else [NO_SPEAKER] * len(fresh))
        for (i, frame, account), result, found, ref in zip(fresh, results, speakers, refs, strict=True):
            stamp = ref.stamp
            speaker, score = found.speaker, found.score
            model_ms = result.model_ms + found.encoder_ms
            reply: FrameReply = {"voice": result.voice, "prob": round(result.prob, 3),
                                 "db": dbfs(frame.audio.samples), "worker": self.port, "ms": round(model_ms, 2)}
            if speaker is not None:
                reply["speaker"], reply["score"] = speaker, None if score is None else round(score, 3)
            events = self._frame_events(frame, account, result.voice, ref)
            if found.change is not None:
                events.append(found.change)
            # Recorded even when this host's log already has the line: the
            # worker that wrote it may have died before its row was stored;
            # the row's key makes a second insert a no-op.
            row = (FrameRow(frame.account, frame.stream, ref.seq, stamp, result.voice, self.port, model_ms, speaker,
                            score)
                   if self.records is not None else None)
            # With the balancer's stamp, the line is written once even if the
            # frame was retried after a worker died between logging and replying.
            held = HeldFrame(frame.account, frame.stream, frame.seq, reply,
                             stamp_line(stamp, result.voice, self.port, model_ms, speaker, score),
                             frame.stamp is not None, row, events, list(found.segments), stamp=stamp)
            answer = self._record(held, account, finals)
            if answer.outcome is Outcome.UNRECORDED:
                self.held.hold(held)
            # The stream's memory has the frame either way: it was processed,
            # and a resend is answered, never processed again.
            account.remember(frame.stream, frame.seq, held.answer(answer.reply))
            answers[i] = answer
            if row is not None and answer.outcome is not Outcome.UNRECORDED:
                rows.append((i, held))

    def _record_again(self, i: int, held: HeldFrame, account: Account, rows: list[tuple[int, HeldFrame]],
                      finals: list[FinalLabel]) -> FrameAnswer:
        """A held frame sent again: its answer if its record was completed
        since, else the rest of its record written now."""
        if held.answered is not None:
            return FrameAnswer({**held.answered, "duplicate": True}, Outcome.DUPLICATE)
        answer = self._record(held, account, finals)
        if answer.outcome is Outcome.UNRECORDED:
            return answer
        # With the time of its line: a resend through another balancer
        # carries a stamp of its own.
        answer = FrameAnswer(held.answer(answer.reply), answer.outcome)
        if held.row is not None:
            rows.append((i, held))  # answered once the row is stored
        else:
            held.answered = answer.reply
        return answer

    def _record(self, held: HeldFrame, account: Account, finals: list[FinalLabel]) -> FrameAnswer:
        """Writes what held's record still lacks (its segments, then its
        line): its answer, ok or why not."""
        fault = self.guard.current
        if fault is not None:  # a write of this batch found the worker unable to write: none is tried
            return unrecorded(fault)
        try:
            if held.segments:
                held.events += self._segments(account, held.stream, held.segments, finals)
                held.segments = []
            if held.logged is None:
                held.logged = self.log.append(held.account, held.line, once=held.once)
        except RecordWriteError as exc:
            return unrecorded(self.guard.failed(exc))
        reply = held.reply  # completed in place: once this is reached it is the frame's reply for good
        if not held.logged:
            reply["duplicate"] = True
        if held.events:
            reply["events"] = held.events
        return FrameAnswer(reply, Outcome.OK if held.logged else Outcome.DUPLICATE)

    def _store_rows(self, records: FrameRecorder, rows: list[tuple[int, HeldFrame]], finals: list[FinalLabel],
                    answers: list[FrameAnswer]) -> None:
        """One round trip for the batch, outside the account locks, and
        before any reply: a worker killed after answering loses no row. If
        nothing durable took the rows, their frames are answered with that
        (their lines are written: a retry elsewhere stores the row, and a
        resend here does, from the held frame)."""
        try:
            records.record([held.row for _, held in rows if held.row is not None], finals)
        except RowsNotStored as exc:
            fault = self.guard.failed(exc)
            for i, held in rows:
                answers[i] = unrecorded(fault)
                self.held.hold(held)
            return
        for i, held in rows:
            if held.key is not None and self.held.get(*held.key) is held:
                held.answered = answers[i].reply  # recorded now (with its line's time): a resend gets it

    @staticmethod
    def _frame_events(frame: Frame, account: Account, voice: int, ref: FrameRef) -> list[Event]:
        """The frame's own events: a restart of a stream this worker did not
        know, speech starting or ending; and the ones kept for its stream."""
        events = account.collect(frame.stream)
        time_text = stamp_text(ref.stamp)
        seq = ref.seq
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
            if self.records is not None:  # labels for the rows: nothing takes them without --database
                finals.append(FinalLabel.of(account.code, c.stream, c.event))
            if c.stream == stream:
                mine.append(c.event)
            else:
                account.post(c.stream, [c.event])
        return mine


def frame_ref(frame: Frame, received: int) -> FrameRef:
    """A frame's name in its stream's record: its seq (its stamp without
    one) and the stamp it is processed under (the balancer's, else received)."""
    stamp = frame.stamp if frame.stamp is not None else received
    return FrameRef(frame.stream, frame.seq if frame.seq is not None else stamp, stamp)


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
