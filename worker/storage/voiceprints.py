"""Voiceprints as both backends keep them: the types, and the arithmetic of
adding one more enrolled sample.

Only embeddings and their metadata are stored, never audio: voiceprints are
biometric data, and the embedding is all verification needs.

A voiceprint combines every sample enrolled for a speaker: it keeps the sum of
the samples' unit embeddings (so later samples can be added) and its
normalized direction, the vector that is scored.

An account may also set its own decision threshold per encoder kind
(AccountThreshold): a GE2E score and an ECAPA score live on different scales,
so a threshold set while one encoder served means nothing to the other.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np


class EncoderMismatch(ValueError):
    """A voiceprint and an embedding come from different encoders."""


@dataclass(frozen=True)
class EncoderId:
    name: str
    model: str
    dim: int

    def __str__(self) -> str:
        return f"{self.name} (model {self.model}, dim {self.dim})"


@dataclass(frozen=True)
class Voiceprint:
    account: str
    name: str
    encoder: EncoderId
    vector: np.ndarray
    samples: int
    speech_seconds: float
    created: str
    updated: str

    def metadata(self, with_vector: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.name, "encoder": self.encoder.name, "model": self.encoder.model, "dim": self.encoder.dim,
            "samples": self.samples, "speech_seconds": round(self.speech_seconds, 2), "created": self.created,
            "updated": self.updated}
        if with_vector:
            meta["vector"] = [round(float(v), 7) for v in self.vector]
        return meta


@dataclass(frozen=True)
class AccountThreshold:
    """An account's own decision threshold for one encoder kind."""
    account: str
    encoder: str
    threshold: float
    updated: str


def check_same_encoder(voiceprint_encoder: EncoderId, encoder: EncoderId, what: str) -> None:
    if voiceprint_encoder != encoder:
        raise EncoderMismatch(f"{what} was made by encoder {voiceprint_encoder}, not {encoder}: "
                              "scores across encoders mean nothing; delete it and enroll again with this encoder")


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def vector_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def blob_vector(blob: bytes, dim: int) -> np.ndarray:
    vector = np.frombuffer(blob, dtype="<f4")
    if len(vector) != dim:
        raise ValueError(f"stored vector has {len(vector)} values, expected {dim}")
    return vector.astype(np.float32)


# What add_sample needs of a stored voiceprint, in this order (both backends select it).
STORED_COLUMNS = "encoder, model, dim, embedding_sum, samples, speech_seconds, created"


@dataclass(frozen=True)
class Updated:
    """A voiceprint after one more enrolled sample."""
    vector: np.ndarray  # unit length: what is scored
    total: np.ndarray   # sum of the samples' unit embeddings
    samples: int
    speech_seconds: float
    created: str
    updated: str


def add_sample(stored: Sequence[Any] | None, encoder: EncoderId, embedding: np.ndarray, speech_seconds: float,
               name: str) -> Updated:
    """The voiceprint with one more sample: stored is its row (STORED_COLUMNS),
    None for a new speaker. Raises EncoderMismatch for another encoder's."""
    unit = embedding.astype(np.float64) / max(float(np.linalg.norm(embedding)), 1e-12)
    now = now_text()
    if stored is None:
        total, samples, seconds, created = unit, 1, speech_seconds, now
    else:
        check_same_encoder(EncoderId(stored[0], stored[1], stored[2]), encoder, f"voiceprint {name!r}")
        total = blob_vector(bytes(stored[3]), stored[2]).astype(np.float64) + unit
        samples, seconds, created = stored[4] + 1, stored[5] + speech_seconds, stored[6]
    vector = (total / max(float(np.linalg.norm(total)), 1e-12)).astype(np.float32)
    return Updated(vector, total, samples, seconds, created, now)
