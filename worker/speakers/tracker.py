"""Who is speaking in an account's stream, frame by frame: the speaker
tracker of the frame path.

Per account with enrolled speakers, a window stream (windows.py) takes the
voiced frames and hands out a window of the last second of speech every
0.2 s; the windows of all accounts due at once are embedded in one encoder
call and scored against the account's voiceprints. The scores feed the
account's decoder (decoder.py, over hmm.py's model): its immediate label
goes into the frame's reply and log line; its final labels, `lag` seconds
later, become segments (events.Segment): runs of consecutive voiced frames
of one stream with one final speaker.

Accounts without voiceprints pay one cached lookup per frame: no windows, no
embedding, no decoder.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from voicestream.events import SEGMENT, SPEAKER_CHANGE, Segment, SpeakerChange
from voicestream.stamps import stamp_text

from ..audio import Audio
from ..metrics import SpeakerMetrics
from ..storage.protocol import StorageUnavailable
from ..storage.voiceprints import EncoderId
from .decoder import FRAME_SECONDS, Final, Label, Observation, SpeakerDecoder
from .encoders import SCORE_MODELS
from .engine import SpeakerEngine, encode
from .hmm import ScoreModel, TurnModel
from .scoring import UNKNOWN, Enrolled, Roster
from .windows import PAUSE_SECONDS, SpeakerWindows, Window, window_due, window_kind, windows_for

log = logging.getLogger("worker.speakers")

UNREADABLE_LOG_SECONDS = 10.0
# How turns change (hmm.TurnModel): per 0.1 s of continuous speech 0.4% of
# the belief goes to "anyone", after a pause of 0.3 s 90%. Chosen with the
# score model (encoders.SCORE_MODELS) over all three benchmarks at once: 0.2%
# raised immediate IER by 0.4 points on the conversations and 1.2 on the
# recorded one; 1% lowered them by 0.4 and 2.5 but raised the final labels'
# IER by 0.3 and named the stranger on 1.1 points more of their speech; 70%
# after a pause cost 0.4-1.3 points of immediate IER at every setting tried.
TURNS = TurnModel(speech_mix=0.004, pause_mix=0.9, pause_frames=round(PAUSE_SECONDS / 0.1), unknown_prior=0.5)
# A posterior this high is a sure decision (windows.SURE_STEP_SECONDS).
SURE = 0.99
# Of a final label's look-ahead, how much goes to centering the windows on
# their frames (decoder.py): half a window.
SHIFT_SECONDS = 0.5


def is_sure(decoder: SpeakerDecoder[Any]) -> bool:
    """Whether the decoder's latest window left its immediate decision sure
    enough for the next window to come later (windows.SURE_STEP_SECONDS).
    The posterior as the window left it, not as it has drifted since: the
    drift toward uniform between windows (TURNS) made a decision unsure two
    frames later, so windows came every 0.4 s at most whatever the step."""
    return decoder.observed is not None and float(decoder.observed.max()) >= SURE


@dataclass(frozen=True, slots=True)
class FrameRef:
    """Which frame a label is for: what its segment's events and records name."""
    stream: str
    seq: int
    stamp: int


@dataclass(frozen=True, slots=True)
class ClosedSegment:
    """A segment whose labels are final: for its stream's client and the account's record."""
    stream: str
    event: Segment


@dataclass(frozen=True, slots=True)
class SpeakerResult:
    """A frame's speaker: its immediate label (None when the account has no
    enrolled speakers, the frame has no voice or no window was scored yet),
    the encoder time the frame paid, its speaker_change event if the label
    changed, and the segments its frame closed (of any stream of the account)."""
    speaker: str | None
    score: float | None
    encoder_ms: float = 0.0
    change: SpeakerChange | None = None
    segments: tuple[ClosedSegment, ...] = ()


NO_SPEAKER = SpeakerResult(None, None)


@dataclass(eq=False)
class _OpenSegment:
    stream: str
    speaker: str
    first: FrameRef
    last: FrameRef
    frames: int = 1
    score_sum: float = 0.0
    scored: int = 0

    def extend(self, final: Final[FrameRef]) -> bool:
        ref = final.ref
        if ref.stream != self.stream or final.label.speaker != self.speaker or final.after_gap:
            return False
        self.last, self.frames = ref, self.frames + 1
        self._score(final.label)
        return True

    def _score(self, label: Label) -> None:
        if label.score is not None:
            self.score_sum, self.scored = self.score_sum + label.score, self.scored + 1

    def close(self) -> ClosedSegment:
        score = round(self.score_sum / self.scored, 3) if self.scored else None
        return ClosedSegment(self.stream, {
            "type": SEGMENT, "speaker": self.speaker, "score": score, "start": stamp_text(self.first.stamp),
            "end": stamp_text(self.last.stamp), "start_seq": self.first.seq, "end_seq": self.last.seq,
            "frames": self.frames, "final": True})


def open_segment(final: Final[FrameRef]) -> _OpenSegment:
    segment = _OpenSegment(final.ref.stream, final.label.speaker, final.ref, final.ref)
    segment._score(final.label)
    return segment


@dataclass(eq=False)
class SpeakerTrack:
    """An account's speaker state (Account.speech): its windows, its decoder
    for the voiceprints it was built with, the last immediate label and the
    segment its final labels are filling."""
    windows: SpeakerWindows
    enrolled: Enrolled
    decoder: SpeakerDecoder[FrameRef]
    label: str | None = None
    open: _OpenSegment | None = None
    closed: list[ClosedSegment] = field(default_factory=list)

    def take_finals(self, finals: Sequence[Final[FrameRef]]) -> None:
        """Final labels into segments: a segment closes as soon as it is
        known to end (the next frame's final label differs, or no voiced
        frame follows its last)."""
        for final in finals:
            if self.open is None or not self.open.extend(final):
                if self.open is not None:
                    self.closed.append(self.open.close())
                self.open = open_segment(final)
            if final.ends_run:
                self.closed.append(self.open.close())
                self.open = None

    def flush(self) -> list[ClosedSegment]:
        """Every pending label final now, every segment closed: what the
        track still owed, oldest first."""
        self.take_finals(self.decoder.flush())
        if self.open is not None:
            self.closed.append(self.open.close())
            self.open = None
        return self.take_closed()

    def take_closed(self) -> list[ClosedSegment]:
        closed, self.closed = self.closed, []
        return closed


class SpeakerState(Protocol):
    """An account as the tracker sees it (worker/accounts.py's Account): its
    code and its speaker track, kept between frames. The caller holds the
    account's lock; the account's registry forgets both together."""
    code: str
    speech: SpeakerTrack | None


@dataclass(frozen=True, slots=True)
class SpeakerFrame:
    """A frame as the tracker takes it."""
    account: SpeakerState
    ref: FrameRef
    audio: Audio
    voice: int


@dataclass(frozen=True, slots=True)
class _Due:
    index: int
    track: SpeakerTrack
    window: Window


class SpeakerTracker:
    """Speaker labels of the frame path (worker/pipeline.py); called under
    the accounts' locks."""

    def __init__(self, engine: SpeakerEngine, roster: Roster, threshold: float | None, lag_seconds: float) -> None:
        self.engine = engine
        self.roster = roster
        self.threshold = threshold  # --speaker-threshold; None: the encoder's score model's
        self.lag_seconds = lag_seconds
        self._quiet_until = 0.0
        self.metrics = SpeakerMetrics()  # registered by create_app

    def on_frames(self, frames: Sequence[SpeakerFrame]) -> list[SpeakerResult]:
        """The speaker of each frame (one each of distinct accounts, whose
        locks the caller holds). The windows due are embedded together, in
        one call per kind of input."""
        results = [NO_SPEAKER] * len(frames)
        if not self.engine.ready:
            return results
        tracks: list[tuple[SpeakerTrack | None, list[ClosedSegment]]] = []
        due: list[_Due] = []
        for i, frame in enumerate(frames):
            track, owed = self._track(frame.account, frame.audio.sample_rate)
            tracks.append((track, owed))
            if track is not None:
                window = track.windows.add(frame.audio.samples, frame.voice, is_sure(track.decoder))
                if window is not None:
                    due.append(_Due(i, track, window))
        observations, encoder_ms = self._score(due)
        for i, (frame, (track, owed)) in enumerate(zip(frames, tracks, strict=True)):
            if track is not None:
                results[i] = self._decide(frame, track, observations.get(i), encoder_ms.get(i, 0.0))
            elif owed:  # the account's voiceprints are gone: what its track still owed goes out
                results[i] = SpeakerResult(None, None, segments=tuple(owed))
        return results

    def close(self, account: SpeakerState) -> list[ClosedSegment]:
        """A stream's CLOSE: the account's pending labels made final now."""
        return account.speech.flush() if account.speech is not None else []

    def _track(self, account: SpeakerState, sample_rate: int) -> tuple[SpeakerTrack | None, list[ClosedSegment]]:
        """The account's track for its current voiceprints (a new one when
        they changed: the old one's pending labels are made final first, and
        owed to the frame's reply)."""
        encoder = self.engine.encoder
        assert encoder is not None  # on_frames checked that the engine is ready
        try:
            enrolled = self.roster.enrolled(account.code, EncoderId(encoder.name, encoder.model, encoder.dim))
        except StorageUnavailable as exc:
            # The store unreadable (locked past the busy timeout, disk gone,
            # the shared database down): tracking goes on with the voiceprints
            # it has; an account not tracked yet goes without speakers meanwhile.
            self._unreadable(account.code, exc)
            return account.speech, []
        track = account.speech
        if track is not None and track.windows.sample_rate != sample_rate:
            # Another device: its windows start afresh, the speaker decision goes on.
            track.windows = windows_for(encoder.name, sample_rate, getattr(encoder, "basis", None))
        if track is not None and enrolled is not None and same_voiceprints(track.enrolled, enrolled):
            # The same voiceprints in the roster's new Enrolled (another
            # account's change): kept, so later frames compare by identity.
            track.enrolled = enrolled
            return track, []
        owed = track.flush() if track is not None else []
        if enrolled is None:
            account.speech = None
            return None, owed
        windows = (track.windows if track is not None
                   else windows_for(encoder.name, sample_rate, getattr(encoder, "basis", None)))
        model = SCORE_MODELS[encoder.name]
        threshold = enrolled.threshold if enrolled.threshold is not None else self.threshold
        if threshold is not None:  # the account's own, else the worker's --speaker-threshold
            model = model.with_threshold(threshold)
        decoder: SpeakerDecoder[FrameRef] = new_decoder(enrolled.names, model, self.lag_seconds)
        account.speech = SpeakerTrack(windows, enrolled, decoder, closed=owed)
        return account.speech, []

    def _score(self, due: list[_Due]) -> tuple[dict[int, Observation], dict[int, float]]:
        """Each due window's scores against its account's voiceprints, by frame index."""
        observations: dict[int, Observation] = {}
        times: dict[int, float] = {}
        for kind in {d.track.windows.kind for d in due}:
            batch = [d for d in due if d.track.windows.kind == kind]
            try:
                outputs, encoder_ms = self.engine.embed([d.window.input for d in batch], kind)
            except Exception:
                # A failed embedding loses one observation, never the frame.
                self.metrics.embedding_failures.inc()
                log.exception("speaker embedding failed for %d accounts", len(batch))
                continue
            self.metrics.embedding_seconds.observe(encoder_ms / 1000)
            for d, embedding in zip(batch, outputs, strict=True):
                observations[d.index] = Observation(d.track.enrolled.matrix @ embedding, d.window.seconds)
                times[d.index] = encoder_ms
        return observations, times

    def _decide(self, frame: SpeakerFrame, track: SpeakerTrack, observation: Observation | None,
                encoder_ms: float) -> SpeakerResult:
        seconds = len(frame.audio.samples) / frame.audio.sample_rate
        label, finals = track.decoder.add(frame.ref, seconds, frame.voice, observation)
        track.take_finals(finals)
        change: SpeakerChange | None = None
        speaker = score = None
        if label is not None:
            speaker, score = label.speaker, label.score
            if observation is not None:
                (self.metrics.unknown if speaker == UNKNOWN else self.metrics.known).inc()
            if speaker != track.label:
                change = {"type": SPEAKER_CHANGE, "seq": frame.ref.seq, "time": stamp_text(frame.ref.stamp),
                          "speaker": speaker, "score": None if score is None else round(score, 3),
                          "previous": track.label}
                track.label = speaker
        return SpeakerResult(speaker, score, encoder_ms, change, tuple(track.take_closed()))

    def _unreadable(self, account: str, exc: StorageUnavailable) -> None:
        # Once per UNREADABLE_LOG_SECONDS: an outage would otherwise log every frame.
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + UNREADABLE_LOG_SECONDS
            log.warning("voiceprints of account %s unreadable (%s); frames go on with the voiceprints tracked "
                        "(none for an account not tracked yet)", account, exc)


def new_decoder(names: tuple[str, ...], model: ScoreModel, lag_seconds: float) -> SpeakerDecoder[Any]:
    """The tracker's decoder over names. One frame of the lag goes to
    learning whether the next frame's final label differs, which a segment
    needs to close: so a segment comes at most `lag` after its last frame
    (100 ms frames)."""
    look_ahead = max(0.0, lag_seconds - FRAME_SECONDS)
    return SpeakerDecoder(names, model, TURNS, look_ahead, min(SHIFT_SECONDS, look_ahead))


def same_voiceprints(tracked: Enrolled, now: Enrolled | None) -> bool:
    """Whether the voiceprints a track decides over are still the account's.
    The roster hands out a new Enrolled whenever any account's voiceprints
    changed (its cache is dropped whole), so identity alone would restart
    every account's tracking at another account's enrollment."""
    return now is not None and (tracked is now or (
        tracked.names == now.names and tracked.threshold == now.threshold
        and np.array_equal(tracked.matrix, now.matrix)))


# --- a recording, tracked as a worker would (voicestream-calibrate, tests) ---

@dataclass(frozen=True, slots=True)
class CutFrame:
    """A 100 ms frame of a recording through the worker's VAD and windows:
    its voice, the window cut at it (if any), its run of speech and that
    run's voiced samples (16 kHz) after it."""
    seconds: float
    voice: int
    window: Window | None
    run: int
    run_voiced: int


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """A 100 ms frame of a recording as the tracker sees it: its voice, its
    run of speech and that run's voiced samples after it, and the embedding of
    the window a stream gets at it when one is due there (None before a run's
    first window; whether one is due depends on the decision: scheduled)."""
    seconds: float
    voice: int
    embedding: np.ndarray | None
    window_seconds: float = 0.0
    run: int = 0
    run_voiced: int = 0


def recording_windows(encoder: Any, vad: Any, audio: Audio, frame_seconds: float = FRAME_SECONDS,
                      every_frame: bool = False) -> list[CutFrame]:
    """The frames of audio through the worker's VAD and the tracker's windows
    for encoder, as a stream of 100 ms frames would go while its decision is
    unsure (every_frame: a window at every voiced frame that could have one)."""
    from ..vad import VadStream  # the frame path's VAD, run here on a recording

    stream = VadStream(audio.sample_rate)
    windows = windows_for(encoder.name, audio.sample_rate, getattr(encoder, "basis", None), every_frame)
    n = round(frame_seconds * audio.sample_rate)
    frames: list[CutFrame] = []
    for start in range(0, len(audio.samples) - n + 1, n):
        samples = audio.samples[start:start + n]
        voice = vad.process(stream, samples).voice
        window = windows.add(samples, voice)
        frames.append(CutFrame(n / audio.sample_rate, voice, window, windows.run, windows.voiced if voice else 0))
    return frames


def record_windows(encoder: Any, vad: Any, audio: Audio, frame_seconds: float = FRAME_SECONDS) -> list[RecordedFrame]:
    """The frames of audio through the worker's VAD and windows, every window
    a frame could be handed embedded by encoder (the same graph and calls as a
    worker's): what any set of voiceprints can then be tracked against
    (track_recording), each window taken where a worker's decision would
    have taken it."""
    frames = recording_windows(encoder, vad, audio, frame_seconds, every_frame=True)
    due = [f.window.input for f in frames if f.window is not None]
    embedded = iter(encode_in_batches(encoder, window_kind(encoder.name), due))
    return [RecordedFrame(f.seconds, f.voice, next(embedded) if f.window is not None else None,
                          f.window.seconds if f.window is not None else 0.0, f.run, f.run_voiced)
            for f in frames]


def scheduled(frames: Iterable[RecordedFrame], sure: Callable[[], bool] = lambda: False
              ) -> Iterator[tuple[RecordedFrame, np.ndarray | None]]:
    """Each frame, and its window's embedding when a stream gets that window
    (windows.window_due; None otherwise), sure() saying whether the decision
    is sure at that frame (asked as the frame is taken, so after the frames
    before it were decided)."""
    last, run = 0, 0
    for frame in frames:
        if frame.run != run:
            last, run = 0, frame.run
        if frame.embedding is not None and window_due(frame.run_voiced, last, sure()):
            last = frame.run_voiced
            yield frame, frame.embedding
        else:
            yield frame, None


def encode_in_batches(encoder: Any, kind: str, inputs: list[np.ndarray], batch: int = 64) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for i in range(0, len(inputs), batch):
        out += list(encode(encoder, kind, inputs[i:i + batch]))
    return out


def track_recording(frames: Sequence[RecordedFrame], enrolled: Enrolled, model: ScoreModel,
                    lag_seconds: float) -> tuple[list[Label | None], list[Label | None]]:
    """(immediate, final) label of each frame of a recorded stream against
    enrolled, with the tracker's decoder and turn model (None: unvoiced, or
    before a first window)."""
    decoder: SpeakerDecoder[int] = new_decoder(enrolled.names, model, lag_seconds)
    immediate: list[Label | None] = []
    final: list[Label | None] = [None] * len(frames)
    for i, (frame, embedding) in enumerate(scheduled(frames, lambda: is_sure(decoder))):
        obs = Observation(enrolled.matrix @ embedding, frame.window_seconds) if embedding is not None else None
        label, finals = decoder.add(i, frame.seconds, frame.voice, obs)
        immediate.append(label)
        for f in finals:
            final[f.ref] = f.label
    for f in decoder.flush():
        final[f.ref] = f.label
    return immediate, final
