"""The three detectors, each giving one decision per 100 ms frame of the
same signals (several signals at one rate go through together).

A silero chunk belongs to the frame in which its last sample arrives: what a
streaming product can answer with that frame, and where the worker's
VadStream puts it (chunks do not align with frames: 100 ms is 3.125 chunks).
"""
from __future__ import annotations

import numpy as np
import webrtcvad

from worker.vad import CHUNK_SAMPLES, CONTEXT_SAMPLES, STATE_SHAPE, SileroOnnx, VadEngine, VadParams, VadStream

FRAME_S = 0.1
RAW_THRESHOLD = 0.5  # silero's default threshold
WEBRTC_MODES = (0, 1, 2, 3)
WEBRTC_SUBFRAME_S = 0.01  # 10 ms: the one WebRTC length that divides 100 ms frames evenly (30 ms does not)
WEBRTC_FRAME_SHARE = 0.5  # a frame is voiced when half of its 10 ms sub-frames are: as the reference's cover


def frame_count(length: int, rate: int) -> int:
    return length // round(rate * FRAME_S)


def chunk_frames(chunks: int, rate: int) -> np.ndarray:
    """The frame of each chunk: where its last sample falls."""
    n, step = CHUNK_SAMPLES[rate], round(rate * FRAME_S)
    return ((np.arange(chunks) + 1) * n - 1) // step


def silero_probs(model: SileroOnnx, signals: list[np.ndarray], rate: int) -> list[np.ndarray]:
    """Raw silero: the model called chunk after chunk with its own state,
    each chunk with the previous chunk's last context samples in front (as
    silero's OnnxWrapper does), signals batched side by side."""
    n, ctx = CHUNK_SAMPLES[rate], CONTEXT_SAMPLES[rate]
    lengths = [len(s) // n for s in signals]
    padded = np.zeros((len(signals), ctx + max(lengths, default=0) * n), np.float32)
    for i, s in enumerate(signals):
        padded[i, ctx:ctx + lengths[i] * n] = s[:lengths[i] * n]
    state = np.zeros((STATE_SHAPE[0], len(signals), STATE_SHAPE[2]), np.float32)
    probs = np.zeros((len(signals), max(lengths, default=0)), np.float32)
    for c in range(probs.shape[1]):
        probs[:, c], state = model(padded[:, c * n:c * n + ctx + n], state, rate)
    return [probs[i, :lengths[i]] for i in range(len(signals))]


def raw_silero(model: SileroOnnx, signals: list[np.ndarray], rate: int) -> list[np.ndarray]:
    """A frame is voiced when any of its chunks reaches RAW_THRESHOLD; no
    hysteresis, no smoothing."""
    out = []
    for s, probs in zip(signals, silero_probs(model, signals, rate), strict=True):
        frames = frame_count(len(s), rate)
        voiced = np.zeros(frames, np.int8)
        owner = chunk_frames(len(probs), rate)
        keep = owner < frames
        np.maximum.at(voiced, owner[keep], (probs[keep] >= RAW_THRESHOLD).astype(np.int8))
        out.append(voiced)
    return out


def webrtc(signal: np.ndarray, rate: int, mode: int) -> np.ndarray:
    """WebRTC VAD on 10 ms sub-frames of PCM 16; a frame is voiced when at
    least WEBRTC_FRAME_SHARE of its sub-frames are."""
    vad = webrtcvad.Vad(mode)
    sub = round(rate * WEBRTC_SUBFRAME_S)
    per_frame = round(FRAME_S / WEBRTC_SUBFRAME_S)
    frames = frame_count(len(signal), rate)
    pcm = np.clip(np.round(signal[:frames * per_frame * sub] * 32768), -32768, 32767).astype("<i2").tobytes()
    width = 2 * sub
    voiced = np.array([vad.is_speech(pcm[i:i + width], rate) for i in range(0, len(pcm), width)], np.int8)
    share = voiced.reshape(frames, per_frame).mean(axis=1)
    return (share >= WEBRTC_FRAME_SHARE).astype(np.int8)


def system(engine: VadEngine, signals: list[np.ndarray], rate: int) -> list[np.ndarray]:
    """The worker's path: one VadStream per signal (an account), 100 ms frames
    through VadEngine.process_many as a batch from the balancer would go."""
    step = round(rate * FRAME_S)
    streams = [VadStream(rate) for _ in signals]
    frames = [frame_count(len(s), rate) for s in signals]
    out = [np.zeros(k, np.int8) for k in frames]
    for f in range(max(frames, default=0)):
        live = [i for i, k in enumerate(frames) if f < k]
        results = engine.process_many([(streams[i], signals[i][f * step:(f + 1) * step]) for i in live])
        for i, result in zip(live, results, strict=True):
            out[i][f] = result.voice
    return out


def system_engine(model: SileroOnnx, params: VadParams) -> VadEngine:
    return VadEngine(model, params)
