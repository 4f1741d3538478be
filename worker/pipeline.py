"""One frame's path through a worker: VAD, speaker tracking, log line, reply."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from .accounts import Account, Accounts
from .audio import Audio, dbfs
from .framelog import FrameLog, format_line, utc_now
from .vad import VadEngine


class SpeakerTracker(Protocol):
    def on_frame(self, account: Account, audio: Audio, voice: int) -> tuple[str | None, float | None, float]:
        """(speaker, score, encoder ms) for this frame; (None, None, 0.0) when
        the account has no enrolled speakers or the frame has no voice."""


class FramePipeline:
    def __init__(self, port: int, vad: VadEngine, log: FrameLog, accounts: Accounts,
                 speakers: SpeakerTracker | None = None) -> None:
        self.port = port
        self.vad = vad
        self.log = log
        self.accounts = accounts
        self.speakers = speakers

    def process(self, code: str, audio: Audio, stream: str = "", seq: int | None = None,
                stamp: datetime | None = None) -> dict[str, Any]:
        """stamp: the balancer's time for this frame, the same on every retry;
        its log line is then written once, whichever worker gets there first."""
        received = stamp or utc_now()
        account = self.accounts.get(code)
        with account.lock:
            replayed = account.replayed(stream, seq)
            if replayed is not None:
                return replayed
            result = self.vad.process(account.vad_stream(audio.sample_rate), audio.samples)
            speaker, score, encoder_ms = (None, None, 0.0)
            if self.speakers is not None:
                speaker, score, encoder_ms = self.speakers.on_frame(account, audio, result.voice)
            model_ms = result.model_ms + encoder_ms
            logged = self.log.append(code, format_line(received, result.voice, self.port, model_ms, speaker, score),
                                     once=stamp is not None)
            reply = {"voice": result.voice, "prob": round(result.prob, 3), "db": dbfs(audio.samples),
                     "worker": self.port, "ms": round(model_ms, 2)}
            if speaker is not None:
                reply["speaker"], reply["score"] = speaker, None if score is None else round(score, 3)
            if not logged:  # a worker that died before replying wrote this frame's line
                reply["duplicate"] = True
            account.remember(stream, seq, reply)
            return reply
