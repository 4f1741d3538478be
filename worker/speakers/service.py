"""What the speaker REST API does, apart from HTTP (worker/routes/speakers.py):
enroll, verify, embed, compare, list and delete, each written to the activity
log. Errors are SpeakerError(status, message); the store's StorageUnavailable
passes through.

Enrollment and verification count only speech (the worker's own VAD chooses
it): silence and noise in a voiceprint would pull it toward every other
recording made in the same room.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..audio import Audio, dbfs, to_16k
from ..metrics import EnrollmentMetrics
from ..storage.protocol import ActivityWriter, VoiceprintStore
from ..storage.voiceprints import AccountThreshold, EncoderId, EncoderMismatch
from ..vad import VadEngine, voiced_samples
from .encoders import unit_rows
from .engine import EncoderUnavailable, SpeakerEngine
from .scoring import UNKNOWN, Enrolled, decide
from .tracker import recording_windows
from .windows import window_kind

# The least speech /verify and /embed take: GE2E's partial utterance is 1.6 s,
# and 1 s windows had 19% EER against 4.7% for 1.5 s (voicestream-calibrate on
# ../shared/data/speakers). Streaming waits longer (tracker.MIN_WINDOW_SECONDS).
MIN_SPEECH_SECONDS = 1.5
# /verify names the best speaker only this far above the second best: a whole
# file of a stranger scores high against every voice like theirs, a speaker's
# own file stands out from the rest. Leave one speaker out on
# ../shared/data/speakers (GE2E, threshold 0.70, voicestream-calibrate), stranger
# files rejected / held-out files named: no margin 12/24, 48/48; 0.05: 18/24,
# 48/48; 0.08 (the margin each fold's other three folds choose): 22/24, 44/48.
# Streaming windows gain nothing from it (0.05 lowered identification 94.0% ->
# 90.6%): not used there. ECAPA: not measured here.
VERIFY_MARGINS = {"ge2e": 0.08}
# A threshold is a cosine score.
THRESHOLD_RANGE = (-1.0, 1.0)


def enrollment_embedding(whole: np.ndarray, windows_mean: np.ndarray | None) -> np.ndarray:
    """What one enrollment recording adds to a voiceprint: its whole-recording
    embedding (what /verify compares) and the mean of the tracker's windows
    over it (what streaming compares), as unit vectors, summed and made unit.

    A voiceprint enrolled under both conditions it is scored in matches both:
    leave one speaker out on ../shared/data/speakers (GE2E, each fold's
    threshold swept), the tracker's 1 s windows had 5.9% EER against 7.0% with
    the whole recording alone, and at an equal share of the stranger's frames
    called unknown (95%) its immediate labels named 88.4% of the enrolled
    speakers' frames against 84.4%; the windows' mean alone: 6.8% EER
    (docs/speakers.md#enrollment)."""
    parts = unit_rows(np.stack([whole] if windows_mean is None else [whole, windows_mean]))
    return unit_rows(parts.sum(axis=0, keepdims=True))[0]


class SpeakerError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class SpeakerService:
    engine: SpeakerEngine | None  # None: --encoder none
    store: VoiceprintStore | None
    vad: VadEngine
    activity: ActivityWriter | None
    threshold: float
    min_enroll_seconds: float
    metrics: EnrollmentMetrics = field(default_factory=EnrollmentMetrics)  # registered by create_app

    # --- checks ---

    def require_encoder(self) -> EncoderId:
        if self.engine is None:
            raise SpeakerError(503, "speaker verification is disabled on this worker (--encoder none); "
                                    "start the workers with --encoder ecapa or --encoder ge2e")
        encoder = self.engine.encoder if self.engine.ready else None
        if encoder is None:
            raise SpeakerError(503, self.engine.unavailable_message())
        return EncoderId(encoder.name, encoder.model, encoder.dim)

    def _store(self) -> VoiceprintStore:
        """The store, once the encoder is ready and the store is reachable
        (else 503: worker/routes/speakers.py answers StorageUnavailable, which
        every store call may raise)."""
        self.require_encoder()
        assert self.store is not None  # a worker with an encoder has a store
        self.store.check_available()
        return self.store

    def _speech(self, audio: Audio, need_seconds: float, purpose: str) -> tuple[np.ndarray, float]:
        voiced = voiced_samples(self.vad, audio)
        seconds = len(voiced) / audio.sample_rate
        if seconds < need_seconds:
            raise SpeakerError(422, f"{purpose} needs at least {need_seconds:g} s of speech; "
                                    f"found {seconds:.2f} s of speech in {audio.seconds:.2f} s of audio")
        return to_16k(Audio(voiced, audio.sample_rate)), seconds

    def _embed(self, samples: np.ndarray) -> np.ndarray:
        assert self.engine is not None  # require_encoder() passed
        try:
            embeddings, _ = self.engine.embed([samples])
        except EncoderUnavailable as exc:
            raise SpeakerError(503, str(exc)) from None
        return embeddings[0]

    def _windows_mean(self, audio: Audio) -> np.ndarray | None:
        """The mean embedding of the windows the speaker tracker would score
        while the recording streams in 100 ms frames (None: no window), in
        batches the size of the engine's, so frames waiting for the encoder
        meanwhile are not held behind a whole recording. (The VAD runs again
        here, frame by frame as a stream's does; the whole embedding's speech
        is voiced_samples's: what /verify embeds of a recording.)"""
        assert self.engine is not None and self.engine.encoder is not None  # require_encoder() passed
        encoder = self.engine.encoder
        inputs = [f.window.input for f in recording_windows(encoder, self.vad, audio) if f.window is not None]
        total, step = np.zeros(encoder.dim), self.engine.max_batch
        try:
            for i in range(0, len(inputs), step):
                embedded, _ = self.engine.embed(inputs[i:i + step], window_kind(encoder.name))
                total += embedded.sum(axis=0)
        except EncoderUnavailable as exc:
            raise SpeakerError(503, str(exc)) from None
        return total / len(inputs) if inputs else None

    # --- API ---

    def status(self) -> dict[str, Any]:
        if self.engine is None:
            return {"encoder": "none", "state": "disabled"}
        return {**self.engine.status(), "threshold": self.threshold}

    def enroll(self, account: str, name: str, audio: Audio) -> dict[str, Any]:
        encoder = self.require_encoder()
        self._store()  # a 503 for a database that is down says more than a complaint about the WAV
        started = time.perf_counter()
        samples, seconds = self._speech(audio, self.min_enroll_seconds, "enrollment")
        embedding = enrollment_embedding(self._embed(samples), self._windows_mean(audio))
        try:
            voiceprint = self._store().enroll(account, name, encoder, embedding, seconds)
        except EncoderMismatch as exc:
            raise SpeakerError(409, str(exc)) from None
        ms = (time.perf_counter() - started) * 1000
        self.metrics.enrollments.inc()
        self._log("enroll", account, speaker=name, speech_seconds=round(seconds, 2),
                  samples=voiceprint.samples, encoder=encoder.name, ms=round(ms, 1))
        return {"account": account, **voiceprint.metadata(), "sample_speech_seconds": round(seconds, 2),
                "ms": round(ms, 1)}

    def verify(self, account: str, audio: Audio) -> dict[str, Any]:
        encoder = self.require_encoder()
        prints = self._store().list(account)
        usable = [v for v in prints if v.encoder == encoder]
        other = [{"name": v.name, "encoder": v.encoder.name, "model": v.encoder.model} for v in prints
                 if v.encoder != encoder]
        if not usable:
            if other:
                raise SpeakerError(409, f"account {account} has voiceprints only from other encoders "
                                        f"({', '.join(sorted({o['encoder'] + ' ' + o['model'] for o in other}))}); "
                                        f"this worker uses {encoder}: enroll again with it")
            raise SpeakerError(404, f"account {account} has no enrolled speakers: "
                                    f"POST a WAV to /accounts/{account}/speakers/<name> first")
        started = time.perf_counter()
        samples, seconds = self._speech(audio, MIN_SPEECH_SECONDS, "verification")
        embedding = self._embed(samples)
        own = self._store().threshold(account, encoder.name)
        enrolled = Enrolled(tuple(v.name for v in usable), np.stack([v.vector for v in usable]),
                            own.threshold if own is not None else None)
        threshold = enrolled.threshold if enrolled.threshold is not None else self.threshold
        margin = VERIFY_MARGINS.get(encoder.name, 0.0)
        decision = decide(enrolled, embedding, self.threshold, margin)
        ms = (time.perf_counter() - started) * 1000
        (self.metrics.verified_unknown if decision.speaker == UNKNOWN else self.metrics.verified_known).inc()
        scores = {n: round(s, 4) for n, s in sorted(decision.scores.items(), key=lambda kv: -kv[1])}
        self._log("verify", account, decision=decision.speaker, best=decision.best, score=round(decision.score, 4),
                  scores=scores, threshold=threshold, margin=margin, speech_seconds=round(seconds, 2), ms=round(ms, 1))
        reply = {"account": account, "decision": decision.speaker, "best": decision.best,
                 "score": round(decision.score, 4), "match": decision.speaker != UNKNOWN,
                 "threshold": threshold, "threshold_source": "worker" if own is None else "account",
                 "margin": margin,
                 "scores": scores, "encoder": encoder.name, "model": encoder.model,
                 "speech_seconds": round(seconds, 2), "ms": round(ms, 1)}
        if other:
            reply["skipped"] = [{**o, "reason": "made by another encoder"} for o in other]
        return reply

    def embed(self, audio: Audio) -> dict[str, Any]:
        encoder = self.require_encoder()
        samples, seconds = self._speech(audio, MIN_SPEECH_SECONDS, "an embedding")
        embedding = self._embed(samples)
        return {"encoder": encoder.name, "model": encoder.model, "dim": encoder.dim,
                "embedding": [round(float(v), 7) for v in embedding],
                "db": dbfs(audio.samples), "speech_db": dbfs(samples),
                "seconds": round(audio.seconds, 2), "speech_seconds": round(seconds, 2)}

    def list(self, account: str) -> dict[str, Any]:
        prints = self._store().list(account)
        return {"account": account, "speakers": [v.metadata() for v in prints]}

    def get(self, account: str, name: str, with_vector: bool) -> dict[str, Any]:
        voiceprint = self._store().get(account, name)
        if voiceprint is None:
            raise SpeakerError(404, f"speaker {name!r} is not enrolled in account {account}")
        return {"account": account, **voiceprint.metadata(with_vector)}

    def delete(self, account: str, name: str) -> dict[str, Any]:
        if not self._store().delete(account, name):
            raise SpeakerError(404, f"speaker {name!r} is not enrolled in account {account}")
        self._log("delete", account, speaker=name)
        return {"account": account, "deleted": [name]}

    def delete_all(self, account: str) -> dict[str, Any]:
        count = self._store().delete_all(account)
        self._log("delete_all", account, count=count)
        return {"account": account, "deleted_count": count}

    def settings(self, account: str) -> dict[str, Any]:
        """The threshold the account's decisions use with this worker's encoder."""
        encoder = self.require_encoder()
        return self._settings(account, encoder.name, self._store().threshold(account, encoder.name))

    def set_settings(self, account: str, body: object) -> dict[str, Any]:
        threshold = parse_settings(body)
        encoder = self.require_encoder()
        saved = self._store().set_threshold(account, encoder.name, threshold)
        self._log("settings", account, encoder=encoder.name, threshold=threshold)
        return self._settings(account, encoder.name, saved)

    def delete_settings(self, account: str) -> dict[str, Any]:
        """Back to the worker's threshold (also when the account had none of its own)."""
        encoder = self.require_encoder()
        deleted = self._store().delete_threshold(account, encoder.name)
        if deleted:
            self._log("settings", account, encoder=encoder.name, threshold=None)
        return {**self._settings(account, encoder.name, None), "deleted": deleted}

    def _settings(self, account: str, encoder: str, own: AccountThreshold | None) -> dict[str, Any]:
        return {"account": account, "encoder": encoder,
                "threshold": own.threshold if own is not None else self.threshold,
                "threshold_source": "account" if own is not None else "worker",
                "worker_threshold": self.threshold, "updated": own.updated if own is not None else None}

    def _log(self, event: str, account: str, **fields: Any) -> None:
        if self.activity is not None:
            self.activity.write(event, account, **fields)


def parse_voiceprint(value: object, label: str) -> tuple[EncoderId, np.ndarray]:
    """A voiceprint or embedding as /speakers/<name>?vector=1 or /embed return
    it: {"encoder", "model", "dim"?, "vector" | "embedding"}."""
    if not isinstance(value, dict):
        raise SpeakerError(400, f"'{label}' must be an object with 'encoder', 'model' and 'vector' (or 'embedding')")
    vector = value.get("vector", value.get("embedding"))
    if not isinstance(vector, list) or not vector:
        raise SpeakerError(400, f"'{label}' needs 'vector' (or 'embedding'): a non-empty list of numbers")
    if len(vector) > 4096 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vector):
        raise SpeakerError(400, f"'{label}.vector' must be a list of at most 4096 numbers")
    try:
        array = np.asarray(vector, np.float64)
    except OverflowError:  # an integer of hundreds of digits
        raise SpeakerError(400, f"'{label}.vector' holds numbers beyond the float range") from None
    if not np.isfinite(array).all():
        raise SpeakerError(400, f"'{label}.vector' holds non-finite numbers")
    if not array.any():
        raise SpeakerError(400, f"'{label}.vector' is all zeros")
    encoder, model = value.get("encoder"), value.get("model")
    if not isinstance(encoder, str) or not encoder or not isinstance(model, str) or not model:
        raise SpeakerError(400, f"'{label}' needs 'encoder' and 'model' (as the API returns them): "
                                "without them a score across encoders could pass unnoticed")
    dim = value.get("dim", len(vector))
    if dim != len(vector):
        raise SpeakerError(400, f"'{label}.dim' is {dim} but its vector has {len(vector)} values")
    return EncoderId(encoder, model, len(vector)), array


def parse_settings(body: object) -> float:
    """The threshold of a PUT /accounts/<code>/settings body: {"threshold": number}."""
    if not isinstance(body, dict):
        raise SpeakerError(400, "send JSON {\"threshold\": <number from -1 to 1>}: the cosine score a speaker must "
                                "reach in this account's decisions (DELETE the settings to use the worker's)")
    unknown = sorted(set(body) - {"threshold"})
    if unknown:
        raise SpeakerError(400, f"unknown settings: {', '.join(map(repr, unknown))}; the only setting is 'threshold'")
    if "threshold" not in body:
        raise SpeakerError(400, "'threshold' is missing: a number from -1 to 1 "
                                "(DELETE the settings to use the worker's threshold)")
    value = body["threshold"]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SpeakerError(400, f"'threshold' must be a number from -1 to 1, not {json.dumps(value)[:40]}")
    low, high = THRESHOLD_RANGE
    if not low <= value <= high:  # also NaN and huge integers, without converting them
        raise SpeakerError(400, f"'threshold' must be from {low:g} to {high:g} (a cosine score), "
                                f"not {str(value)[:40]}")
    return float(value)


def compare(body: object) -> dict[str, Any]:
    """Cosine score of two voiceprints made by the same encoder."""
    if not isinstance(body, dict) or "a" not in body or "b" not in body:
        raise SpeakerError(400, "send JSON {\"a\": <voiceprint>, \"b\": <voiceprint>}, each as returned by "
                                "GET /accounts/<code>/speakers/<name>?vector=1 or POST /embed")
    enc_a, a = parse_voiceprint(body["a"], "a")
    enc_b, b = parse_voiceprint(body["b"], "b")
    if (enc_a.name, enc_a.model) != (enc_b.name, enc_b.model):
        raise SpeakerError(409, f"'a' was made by encoder {enc_a.name} (model {enc_a.model}) and 'b' by "
                                f"{enc_b.name} (model {enc_b.model}): scores across encoders mean nothing")
    if len(a) != len(b):
        raise SpeakerError(400, f"'a' has {len(a)} values and 'b' {len(b)}: not comparable")
    # Scaled first: the cosine is the same, and norms of values near 1e308
    # would overflow to inf (a NaN score, clamped to a false 1.0).
    a, b = a / np.abs(a).max(), b / np.abs(b).max()
    score = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return {"score": round(max(-1.0, min(1.0, score)), 6), "encoder": enc_a.name, "model": enc_a.model}

