"""Speaker encoders: 16 kHz mono audio in, unit-length embeddings out.

Two kinds:
- ``ecapa``: SpeechBrain's ECAPA-TDNN, loaded with
  ``EncoderClassifier.from_hparams(source=..., savedir=...)`` from a hub id or
  a local model directory.
- ``ge2e``: the GE2E LSTM whose pretrained weights ship inside the
  ``resemblyzer`` package (no download).

This module holds what every encoder shares, without torch: the protocol,
where each kind's weights are, their fingerprint, the batching helpers and the
reasons given when no encoder can be had. Workers serve ONNX graphs of the
encoders (graphs.py), since torch alone costs a process about 480 MB; the
torch models they are exported from live in the export tools
(export/torch_encoders.py).

Each encoder carries ``name`` (its kind) and ``model`` (a fingerprint of its
weights): a voiceprint records both, and scoring it against an embedding of a
different kind or different weights is refused, since cosine scores across
embedding spaces are meaningless.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .hmm import ScoreModel

SAMPLE_RATE = 16000

# Default decision thresholds (cosine score a speaker must reach), per encoder.
# ge2e: 0.70, /verify's threshold on whole recordings (the tracker has its
#   own: SCORE_MODELS). It was the equal error rate's (5.3%) of the 2 s
#   windows a worker decided on before the speaker tracker; whole files have
#   theirs at 0.754 (6.2%, voicestream-calibrate on ../shared/data/speakers),
#   and with its margin (service.VERIFY_MARGINS) /verify at 0.70 rejects 22
#   of 24 stranger files and names 44 of 48 held-out ones. A small set:
#   recalibrate on your own speakers.
# ecapa: SpeechBrain's own default for spkrec-ecapa-voxceleb
#   (SpeakerRecognition.verify_batch, threshold=0.25). Not calibrated here:
#   the real model cannot be downloaded in this environment. Run
#   voicestream-calibrate --encoders ecapa where it can.
DEFAULT_THRESHOLDS = {"ge2e": 0.70, "ecapa": 0.25}

# How the tracker weighs a window's scores (hmm.ScoreModel), per encoder; the
# threshold is for a 1 s window (--speaker-threshold, or an account's own,
# replaces it, as it replaces /verify's).
# ge2e: threshold 0.685, chosen over every benchmark at once (the sweep from
#   0.680 to 0.695: docs/speakers.md#unknown-speakers). 0.680 is the equal
#   error rate's of 1 s windows against voiceprints enrolled as
#   service.enrollment_embedding makes them (5.9%, voicestream-calibrate on
#   ../shared/data/speakers; whole-recording voiceprints had 7.0% at 0.653).
#   Against 0.680, 0.685 names strangers less (leave one out, final labels
#   unknown 90.6% against 86.8%) and does better on the held-out
#   conversations (seed 1 IER 15.2 / 8.8% against 16.2 / 9.9%), for 0.9 point
#   of identification (95.5%) and 0.5 of the seed-0 conversations' immediate
#   IER (12.2%); from 0.6875 up, identification falls below 95%. The length
#   terms are hmm.py's fit of the scores' 1/L law (refitting its shift to the
#   new voiceprints, 0.03, raised immediate IER to 12.9%); beta 40 was chosen with the
#   turn model over the conversation benchmark, the recorded conversation and
#   leave one speaker out together (docs/speakers.md#streaming): against beta
#   20 and 30 it gave the lowest immediate IER on both conversations (17.0%,
#   29.7%; 30: 17.7%, 33.4%) for final labels within 0.3 point of the best.
# ecapa: not calibrated (no pretrained weights here): SpeechBrain's 0.25 at
#   every window length, every window weighing the same.
SCORE_MODELS = {
    "ge2e": ScoreModel(threshold=0.685, length_shift=0.05, length_weight=0.3, beta=40.0),
    "ecapa": ScoreModel(threshold=0.25, length_shift=0.0, length_weight=0.0, beta=40.0),
}

ECAPA_FILES = ("hyperparams.yaml", "embedding_model.ckpt", "mean_var_norm_emb.ckpt",
               "classifier.ckpt", "label_encoder.txt")

DISABLED_REASON = ("speaker verification is disabled on this worker (--encoder none); "
                   "start it with --encoder ecapa or --encoder ge2e")


class Encoder(Protocol):
    name: str   # the kind: "ecapa" | "ge2e"
    model: str  # fingerprint of the weights
    dim: int

    def embed_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        """(len(windows), dim) float32 unit vectors; windows are 16 kHz mono float32."""


@dataclass(frozen=True)
class Unavailable:
    """Why no encoder could be loaded, phrased for the client of a 503."""
    encoder: str
    reason: str


def fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def same_length_groups(windows: list[np.ndarray]) -> list[list[int]]:
    """Indices of windows grouped by length. Windows of equal length go
    through a model together, so no window is padded and a batched embedding
    equals the one computed alone."""
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        groups.setdefault(len(w), []).append(i)
    return list(groups.values())


def average_partials(partial_embeds: np.ndarray, counts: list[int]) -> np.ndarray:
    """One unit row per window: the mean of its partial utterances'
    embeddings, as resemblyzer's embed_utterance."""
    out, start = [], 0
    for n in counts:
        out.append(partial_embeds[start:start + n].mean(axis=0))
        start += n
    return unit_rows(np.stack(out))


# --- where the weights are ------------------------------------------------------

def ecapa_savedir(source: str, model_dir: str | Path) -> Path:
    """Where from_hparams collects (links or downloads) the model files: one
    folder per source under model_dir, so two sources never share links."""
    if Path(source).is_dir():
        resolved = str(Path(source).resolve())
        tag = hashlib.sha256(resolved.encode()).hexdigest()[:10]
        return Path(model_dir) / f"local-{Path(resolved).name}-{tag}"
    return Path(model_dir) / source.replace("/", "--")


def ecapa_local_source(source: str) -> Path | None:
    """The local model directory source names, or None for a hub id. Raises
    FileNotFoundError for a path that is not a usable model directory."""
    if Path(source).is_dir():
        hparams = Path(source) / "hyperparams.yaml"
        if not hparams.is_file():
            raise FileNotFoundError(f"{hparams} is missing")
        return Path(source).resolve()
    if source.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"model directory {source} does not exist")
    return None


def ge2e_weights_path() -> Path | None:
    """resemblyzer's packaged pretrained.pt, found without importing the
    package (its __init__ imports torch); None when resemblyzer is not
    installed (a runtime-only install)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt").resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the resemblyzer package")
    return path


# --- why there is no encoder ------------------------------------------------------

def ecapa_help(source: str) -> str:
    return ("To provide the model: let this worker reach huggingface.co once (it is cached under --model-dir), "
            "or put the files of speechbrain/spkrec-ecapa-voxceleb "
            f"({', '.join(ECAPA_FILES)}) in a directory and start the worker with --ecapa-source DIR "
            "(env ECAPA_SOURCE); or start it with --encoder ge2e, which needs no download. "
            f"Configured source: {source!r}.")


def ecapa_unavailable_reason(source: str, exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"ECAPA model could not be loaded ({exc.__class__.__name__}: {first_line}). " + ecapa_help(source)


def ge2e_unavailable_reason(exc: BaseException) -> str:
    return (f"GE2E encoder could not be loaded ({exc.__class__.__name__}: {exc}). "
            "Install it with: pip install -r requirements.txt (package resemblyzer).")


def unavailable_reason(kind: str, source: str, exc: BaseException) -> str:
    return ge2e_unavailable_reason(exc) if kind == "ge2e" else ecapa_unavailable_reason(source, exc)
