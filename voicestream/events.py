"""Events: what changed in an account's stream, so a client need not diff
per-frame fields. The worker puts them in the reply of the frame that caused
them (FrameReply's "events", in order); the balancer passes them through.

    speech_start    voice turned on at this frame (the VAD's decision)
    speech_end      voice turned off at this frame: its first unvoiced frame
    speaker_change  the immediate label changed at this frame (the first label
                    of a stream too: previous is null)
    segment         final labels: a run of consecutive voiced frames of one
                    stream with the same final speaker, from start_seq to
                    end_seq. Sent once its last frame's label is final (at most
                    --speaker-lag-ms after that frame, or at CLOSE), in order;
                    every voiced frame of a stream with enrolled speakers is in
                    exactly one segment
    tracker_restart this worker had no speaker state for a stream that was
                    already going (a failover, or state forgotten when idle):
                    tracking starts fresh here, and frames before this one
                    whose segment was not sent will not get one

"time", "start" and "end" are frame stamps as a log line shows them
(stamps.stamp_text): the balancer's time of the frame, not the audio's. A
client that ignores "events" sees replies exactly as before.
"""
from __future__ import annotations

from typing import Literal, TypedDict

SPEECH_START: Literal["speech_start"] = "speech_start"
SPEECH_END: Literal["speech_end"] = "speech_end"
SPEAKER_CHANGE: Literal["speaker_change"] = "speaker_change"
SEGMENT: Literal["segment"] = "segment"
TRACKER_RESTART: Literal["tracker_restart"] = "tracker_restart"


class SpeechEvent(TypedDict):
    type: Literal["speech_start", "speech_end"]
    seq: int
    time: str


class SpeakerChange(TypedDict):
    type: Literal["speaker_change"]
    seq: int
    time: str
    speaker: str           # an enrolled speaker's name or "unknown"
    score: float | None    # the window score behind it
    previous: str | None   # the label before; null at a stream's first label


class Segment(TypedDict):
    type: Literal["segment"]
    speaker: str           # an enrolled speaker's name or "unknown"
    score: float | None    # mean window score of the speaker over the segment (unknown: of the best voiceprint)
    start: str             # stamp of its first frame
    end: str               # stamp of its last frame
    start_seq: int
    end_seq: int
    frames: int
    final: bool            # always true: a segment is sent once, when its labels are final


class TrackerRestart(TypedDict):
    type: Literal["tracker_restart"]
    seq: int
    time: str
    reason: str


Event = SpeechEvent | SpeakerChange | Segment | TrackerRestart
