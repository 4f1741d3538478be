"""The worker's Prometheus metrics (docs/metrics.md lists them all; GET
/metrics is worker/routes/metrics.py).

The components own their metrics, made unregistered (registry=None):
FramePipeline its FrameMetrics, SpeakerTracker its SpeakerMetrics,
SpeakerService its EnrollmentMetrics. create_app registers them in one
CollectorRegistry per app, not prometheus_client's global one, so tests build
several workers in one process. gunicorn runs one process per port
(worker/__main__.py): that process is the whole worker, so its registry is
too - no multiprocess mode.

Cheap on the frame path: pre-bound label children (a dict lookup and a locked
add, ~0.4 us), histograms observed once per batch or model call. Labels are
fixed sets; an account code or a stream id is never a label.
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector

from voicestream.batch import MAX_FRAMES

from .storage.guard import REASONS

# How the worker answered a frame of a batch: ok; duplicate (a retry of a
# frame already processed here, or logged by a worker that died before
# replying); invalid (refused: not a WAV, a bad account code or seq);
# unrecorded (its record could not be written: an error reply).
FRAME_OUTCOMES = ("ok", "duplicate", "invalid", "unrecorded")
# Why a whole POST /frames/batch was refused (none of its frames counted in
# the outcomes): draining (SIGTERM), degraded (its record cannot be written
# now: its frames are counted by reason as unrecorded), malformed.
BATCH_REJECTIONS = ("draining", "degraded", "malformed")
SPEAKER_DECISIONS = ("known", "unknown")
# A VAD call is ~1 ms per 100 ms frame; a speaker embedding 10-100 ms.
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = tuple(float(2**i) for i in range(MAX_FRAMES.bit_length()))  # 1, 2, 4 ... MAX_FRAMES


class FrameMetrics:
    """The frame path's: owned by FramePipeline, counted by it and by the
    frames route."""

    def __init__(self) -> None:
        frames = Counter("voicestream_worker_frames_total", "Frames of batches answered, by outcome.",
                         ["outcome"], registry=None)
        self.ok, self.duplicate, self.invalid, self.unrecorded = (frames.labels(outcome) for outcome in FRAME_OUTCOMES)
        unrecorded = Counter("voicestream_worker_frames_unrecorded_total",
                             "Frames answered with an error because their record (log line, segments, database "
                             "row) could not be written, by reason; a batch refused whole while degraded counts each "
                             "of its frames.", ["reason"], registry=None)
        self.unrecorded_by = {reason: unrecorded.labels(reason) for reason in REASONS}
        rejected = Counter("voicestream_worker_batches_rejected_total",
                           "POST /frames/batch refused whole, by reason.", ["reason"], registry=None)
        self.rejected = {reason: rejected.labels(reason) for reason in BATCH_REJECTIONS}
        self.batch_frames = Histogram("voicestream_worker_batch_frames", "Frames per POST /frames/batch.",
                                      buckets=BATCH_BUCKETS, registry=None)
        self.batch_seconds = Histogram("voicestream_worker_batch_seconds",
                                       "Processing of a batch's valid frames: VAD, speakers, log lines and "
                                       "database rows.", buckets=SECONDS_BUCKETS, registry=None)
        self.vad_seconds = Histogram("voicestream_worker_vad_seconds",
                                     "One VAD model call (one frame each of up to a batch's accounts).",
                                     buckets=SECONDS_BUCKETS, registry=None)
        self.collectors: tuple[Collector, ...] = (frames, unrecorded, rejected, self.batch_frames,
                                                  self.batch_seconds, self.vad_seconds)

    def not_recorded(self, reason: str, frames: int = 1) -> None:
        """Counts frames answered with an error for their record's sake."""
        self.unrecorded_by[reason].inc(frames)


class SpeakerMetrics:
    """The frame path's speaker tracking: owned by SpeakerTracker."""

    def __init__(self) -> None:
        decisions = Counter("voicestream_worker_speaker_decisions_total",
                            "Speaker decisions on streamed speech: known (an enrolled speaker scored at least the "
                            "threshold) or unknown.", ["decision"], registry=None)
        self.known, self.unknown = (decisions.labels(decision) for decision in SPEAKER_DECISIONS)
        self.embedding_seconds = Histogram("voicestream_worker_speaker_embedding_seconds",
                                           "Speaker encoder time of one embedding call of the frame path (the "
                                           "model run it joined).", buckets=SECONDS_BUCKETS, registry=None)
        self.embedding_failures = Counter("voicestream_worker_speaker_embedding_failures_total",
                                          "Embedding calls of the frame path that failed (their decisions lost).",
                                          registry=None)
        self.collectors: tuple[Collector, ...] = (decisions, self.embedding_seconds, self.embedding_failures)


class EnrollmentMetrics:
    """The speaker API's: owned by SpeakerService."""

    def __init__(self) -> None:
        self.enrollments = Counter("voicestream_worker_enrollments_total",
                                   "Speaker samples enrolled (POST /accounts/<code>/speakers/<name> that succeeded).",
                                   registry=None)
        verifications = Counter("voicestream_worker_verifications_total",
                                "POST /accounts/<code>/verify decisions: known or unknown.", ["decision"],
                                registry=None)
        self.verified_known, self.verified_unknown = (verifications.labels(d) for d in SPEAKER_DECISIONS)
        self.collectors: tuple[Collector, ...] = (self.enrollments, verifications)
