"""Speaker encoders: 16 kHz mono audio in, unit-length embeddings out.

Two kinds:
- ``ecapa``: SpeechBrain's ECAPA-TDNN, loaded with
  ``EncoderClassifier.from_hparams(source=..., savedir=...)`` from a hub id or
  a local model directory.
- ``ge2e``: the GE2E LSTM whose pretrained weights ship inside the
  ``resemblyzer`` package (no download).

The classes here run the torch models. Workers do not: they serve ONNX
exports of them (onnx_encoders.py), since torch alone costs a process about
480 MB. These are the reference the exports are made from and checked
against (export.py), and what scripts/calibrate.py measures. The numpy
feature code (GE2E's mel frames and partial utterances) serves both.

torch, SpeechBrain and resemblyzer are imported inside the constructors only,
so importing this module costs nothing for a worker.

Each encoder carries ``name`` (its kind) and ``model`` (a fingerprint of its
weights): a voiceprint records both, and scoring it against an embedding of a
different kind or different weights is refused, since cosine scores across
embedding spaces are meaningless.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16000

# Default decision thresholds (cosine score a speaker must reach), per encoder.
# ge2e: 0.70, the threshold at the equal error rate (5.3%) of the windows a
#   worker embeds with its defaults (2 s window, 0.5 s hop, first decision at
#   1.5 s of speech), measured by scripts/calibrate.py on ../shared/data/speakers
#   (4 speakers, first 2 files of each enrolled, 150 target / 450 non-target
#   windows). A small set: recalibrate on your own speakers.
# ecapa: SpeechBrain's own default for spkrec-ecapa-voxceleb
#   (SpeakerRecognition.verify_batch, threshold=0.25). Not calibrated here:
#   the real model cannot be downloaded in this environment. Run
#   scripts/calibrate.py --encoders ecapa where it can.
DEFAULT_THRESHOLDS = {"ge2e": 0.70, "ecapa": 0.25}

ECAPA_FILES = ("hyperparams.yaml", "embedding_model.ckpt", "mean_var_norm_emb.ckpt",
               "classifier.ckpt", "label_encoder.txt")


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


# --- ECAPA -------------------------------------------------------------------

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


def ecapa_unavailable_reason(source: str, exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"ECAPA model could not be loaded ({exc.__class__.__name__}: {first_line}). " + ecapa_help(source)


def ge2e_unavailable_reason(exc: BaseException) -> str:
    return (f"GE2E encoder could not be loaded ({exc.__class__.__name__}: {exc}). "
            "Install it with: pip install -r requirements.txt (package resemblyzer).")


DISABLED_REASON = ("speaker verification is disabled on this worker (--encoder none); "
                   "start it with --encoder ecapa or --encoder ge2e")


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


def ecapa_help(source: str) -> str:
    return ("To provide the model: let this worker reach huggingface.co once (it is cached under --model-dir), "
            "or put the files of speechbrain/spkrec-ecapa-voxceleb "
            f"({', '.join(ECAPA_FILES)}) in a directory and start the worker with --ecapa-source DIR "
            "(env ECAPA_SOURCE); or start it with --encoder ge2e, which needs no download. "
            f"Configured source: {source!r}.")


class EcapaEncoder:
    """SpeechBrain's EncoderClassifier. Its hyperparams.yaml builds Python
    objects (HyperPyYAML), so the source must be trusted like code: the
    official hub repository or a directory the operator controls."""
    name = "ecapa"

    def __init__(self, source: str, model_dir: str | Path) -> None:
        import torch
        from speechbrain.inference.classifiers import EncoderClassifier
        from speechbrain.utils.fetching import FetchConfig

        self._torch = torch
        savedir = ecapa_savedir(source, model_dir)
        overrides = {}
        local = ecapa_local_source(source) is not None
        if local:
            # The hub's hyperparams.yaml points its pretrainer at the hub
            # repository through pretrained_path; a local copy must point at
            # itself or loading would go to the network.
            if re.search(r"^pretrained_path\s*:", (Path(source) / "hyperparams.yaml").read_text(), re.MULTILINE):
                overrides["pretrained_path"] = str(Path(source).resolve())
        self.classifier = EncoderClassifier.from_hparams(
            source=str(Path(source).resolve()) if local else source, savedir=str(savedir),
            overrides=overrides, run_opts={"device": "cpu"},
            fetch_config=FetchConfig(huggingface_cache_dir=str(Path(model_dir) / "huggingface")))
        self.model = fingerprint((savedir / "embedding_model.ckpt").resolve())
        self.dim = int(self.embed_batch([np.zeros(SAMPLE_RATE, np.float32)]).shape[1])

    def embed_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        torch = self._torch
        out: list[np.ndarray | None] = [None] * len(windows)
        with torch.inference_mode():
            for indices in same_length_groups(windows):
                wavs = torch.from_numpy(np.stack([windows[i] for i in indices]))
                emb = self.classifier.encode_batch(wavs).reshape(len(indices), -1).numpy()
                for i, e in zip(indices, emb):
                    out[i] = e
        return unit_rows(np.stack(out))


# --- GE2E --------------------------------------------------------------------

GE2E_N_FFT = 400        # 25 ms windows
GE2E_HOP = 160          # 10 ms steps
GE2E_N_MELS = 40
GE2E_PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
GE2E_TARGET_DBFS = -30.0
GE2E_DIM = 256


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale: linear below 1 kHz, logarithmic above (librosa's default).
    hz = np.asarray(hz, np.float64)
    mel = hz / (200.0 / 3)
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    hz = mel * (200.0 / 3)
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_region] - 15.0))
    return hz


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = GE2E_N_FFT, n_mels: int = GE2E_N_MELS) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) (Slaney, area-normalized).

    Written out because importing librosa's filters pulls in numba: ~1.5 s and
    ~200 MB per worker for one small matrix. tests/test_speaker_encoders.py
    checks it against librosa."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0],
                                       _hz_to_mel(np.array([sample_rate / 2.0]))[0], n_mels + 2))
    fdiff = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    return weights.astype(np.float32)


_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(GE2E_N_FFT) / GE2E_N_FFT)).astype(np.float32)


def mel_spectrogram(wav: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(frames, n_mels) power mel spectrogram, as resemblyzer's
    wav_to_mel_spectrogram (librosa.feature.melspectrogram: centered frames,
    zero padding, periodic Hann window, power 2)."""
    padded = np.pad(wav.astype(np.float32, copy=False), GE2E_N_FFT // 2)
    n_frames = 1 + (len(padded) - GE2E_N_FFT) // GE2E_HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, GE2E_N_FFT)[::GE2E_HOP][:n_frames]
    power = np.abs(np.fft.rfft(frames * _HANN, axis=1)) ** 2
    return (power @ basis.T).astype(np.float32)


def normalize_level(wav: np.ndarray, target_dbfs: float = GE2E_TARGET_DBFS) -> np.ndarray:
    """Raise quiet audio to target_dbfs, never lower it (as resemblyzer's
    preprocessing, which GE2E was trained with). Silence stays silence."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    if rms < 1e-6:
        return wav
    gain_db = target_dbfs - 20 * np.log10(rms)
    return wav if gain_db <= 0 else (wav * 10 ** (gain_db / 20)).astype(np.float32)


def partial_slices(n_samples: int, rate: float = 1.3,
                   min_coverage: float = 0.75) -> tuple[list[slice], list[slice]]:
    """(wav slices, mel slices) of the 1.6 s partial utterances of n_samples,
    as resemblyzer's VoiceEncoder.compute_partial_slices: written out because
    that one lives on a torch module. tests/test_speakers_onnx.py checks that
    both agree."""
    samples_per_frame = GE2E_HOP
    n_frames = int(np.ceil((n_samples + 1) / samples_per_frame))
    frame_step = int(np.round((SAMPLE_RATE / rate) / samples_per_frame))
    if not 0 < frame_step <= GE2E_PARTIAL_FRAMES:
        raise ValueError(f"rate {rate} gives a step of {frame_step} frames")
    steps = max(1, n_frames - GE2E_PARTIAL_FRAMES + frame_step + 1)
    mel_slices = [slice(i, i + GE2E_PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    wav_slices = [slice(m.start * samples_per_frame, m.stop * samples_per_frame) for m in mel_slices]
    last = wav_slices[-1]
    # A last partial with less than min_coverage of real audio is dropped,
    # unless it is the only one.
    if (n_samples - last.start) / (last.stop - last.start) < min_coverage and len(mel_slices) > 1:
        return wav_slices[:-1], mel_slices[:-1]
    return wav_slices, mel_slices


def ge2e_partials(wav: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(n, 160, 40) mel slices of 1.6 s, 1.3 per second, as resemblyzer's
    embed_utterance cuts a window (after raising its level)."""
    wav = normalize_level(wav)
    wav_slices, mel_slices = partial_slices(len(wav))
    if wav_slices[-1].stop >= len(wav):
        wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
    mel = mel_spectrogram(wav, basis)
    return np.stack([mel[s] for s in mel_slices])


def ge2e_weights_path() -> Path:
    """resemblyzer's packaged pretrained.pt, found without importing the
    package (its __init__ imports torch)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("resemblyzer is not installed")
    path = (Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt").resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the resemblyzer package")
    return path


class Ge2eEncoder:
    """resemblyzer's VoiceEncoder, batched: the partial utterances of every
    window in a batch go through the LSTM in one call.

    resemblyzer's preprocess_wav (webrtcvad trimming) is not applied: the
    worker's VAD already chose the voiced audio, and a 2 s streaming window
    trimmed again would lose the little speech it has."""
    name = "ge2e"

    def __init__(self) -> None:
        import torch
        from resemblyzer import VoiceEncoder

        self._torch = torch
        weights = ge2e_weights_path()
        self.net = VoiceEncoder("cpu", verbose=False, weights_fpath=weights)
        self.net.eval()
        self._basis = mel_filterbank()
        self.model = fingerprint(weights)
        self.dim = GE2E_DIM

    def partials(self, wav: np.ndarray) -> np.ndarray:
        return ge2e_partials(wav, self._basis)

    def embed_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        torch = self._torch
        parts = [self.partials(w) for w in windows]
        with torch.inference_mode():
            partial_embeds = self.net(torch.from_numpy(np.concatenate(parts))).numpy()
        return average_partials(partial_embeds, [len(p) for p in parts])


# --- loading -----------------------------------------------------------------

def load_encoder(kind: str, ecapa_source: str = "", model_dir: str | Path = "models") -> Encoder | Unavailable:
    """The configured torch encoder, or why it cannot be had. Never raises."""
    if kind == "ge2e":
        try:
            return Ge2eEncoder()
        except Exception as exc:  # a broken install must not take VAD down
            return Unavailable(kind, ge2e_unavailable_reason(exc))
    if kind == "ecapa":
        try:
            return EcapaEncoder(ecapa_source, model_dir)
        except Exception as exc:
            return Unavailable(kind, ecapa_unavailable_reason(ecapa_source, exc))
    return Unavailable(kind, DISABLED_REASON)
