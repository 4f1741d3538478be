"""The worker's speaker encoders: ONNX graphs run by onnxruntime, no torch,
and where they are cached.

torch alone costs a process about 480 MB of RSS; onnxruntime is already
there for silero. The graphs are exported from the torch models by
``python -m worker.export`` (loader.py runs it in a subprocess when
this machine has the export tools and the graph is missing).

- ge2e: the graph is the LSTM; mel frames and partial utterances are cut in
  numpy (ge2e_features.py), as with torch.
- ecapa: the graph holds everything encode_batch does to a window:
  SpeechBrain's Fbank (STFT, mel filterbank, dB), the per-window mean
  normalization and the ECAPA-TDNN.

A graph is cached under ``<model-dir>/onnx/`` as
``<encoder>-<model>-<variant>.onnx``:
- ``model`` is the fingerprint of the weights, the same one voiceprints
  record, so voiceprints enrolled before stay comparable;
- ``variant`` covers what else shapes the graph: the export code's version
  and, for ECAPA, hyperparams.yaml (features, sizes).
New weights or a new export give a new name; nothing is overwritten. The
export also writes encoder, model, dim, variant, source and export version
into the graph's metadata, which is how a worker without the weights (no
resemblyzer in a runtime-only install) finds a graph copied to it.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime

from .encoders import (
    average_partials,
    ecapa_local_source,
    ecapa_savedir,
    fingerprint,
    ge2e_weights_path,
    same_length_groups,
    unit_rows,
)
from .ge2e_features import ge2e_partials, mel_filterbank

log = logging.getLogger("worker.speakers")

# Bump when the export changes what it writes: caches of the old code are then
# exported again instead of being reused.
# 2: GE2E's time axis is dynamic (the tracker's windows are 30-100 mel frames).
EXPORT_VERSION = "2"


# --- serving -------------------------------------------------------------------

def session(path: Path) -> onnxruntime.InferenceSession:
    opts = onnxruntime.SessionOptions()
    # As worker/vad.py: several worker processes share two cores, so one
    # thread each and no spinning.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # onnxruntime's arena keeps the peak of any batch for the life of the
    # process: ECAPA at the engine's 32 windows of 2 s held 1.8 GB after one
    # such batch, against 0.17 GB without it, at the same speed.
    opts.enable_cpu_mem_arena = False
    # The exporter's shape annotations for GE2E's LSTM disagree with
    # onnxruntime's inference (harmless); that would be a warning per start.
    opts.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class Graph:
    """An exported speaker encoder served by onnxruntime."""
    session: onnxruntime.InferenceSession
    model: str
    dim: int
    info: dict[str, object] = field(default_factory=dict)  # shown on /health
    metadata: dict[str, str] = field(default_factory=dict)  # what the export wrote into the graph
    name = ""

    def embed_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError


@dataclass
class Ge2eGraph(Graph):
    """GE2E as resemblyzer's VoiceEncoder.embed_utterance, batched."""
    name = "ge2e"

    def __post_init__(self) -> None:
        self.basis = mel_filterbank()

    def embed_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        parts = [ge2e_partials(w, self.basis) for w in windows]
        return average_partials(self.embed_partials(np.concatenate(parts)), [len(p) for p in parts])

    def embed_partials(self, mels: np.ndarray) -> np.ndarray:
        """(n, 256) unit embeddings of (n, frames, 40) mel windows of one
        length: the LSTM alone."""
        [partial_embeds] = self.session.run(None, {"mels": mels.astype(np.float32, copy=False)})
        return partial_embeds

    def embed_mels(self, windows: list[np.ndarray]) -> np.ndarray:
        """Unit embeddings of (frames, 40) mel windows of any lengths: each
        length in one call, so no window is padded (an LSTM's last state
        after padding is another embedding)."""
        out = np.empty((len(windows), self.dim), np.float32)
        for indices in same_length_groups(windows):
            out[indices] = self.embed_partials(np.stack([windows[i] for i in indices]))
        return out


@dataclass
class EcapaGraph(Graph):
    """ECAPA as EncoderClassifier.encode_batch (without its normalize step)."""
    name = "ecapa"

    def embed_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(windows), self.dim), np.float32)
        for indices in same_length_groups(windows):
            wavs = np.stack([windows[i] for i in indices]).astype(np.float32, copy=False)
            [out[indices]] = self.session.run(None, {"wavs": wavs})
        return unit_rows(out)


GRAPHS: dict[str, type[Graph]] = {"ge2e": Ge2eGraph, "ecapa": EcapaGraph}


def open_graph(path: Path, exported: bool = False) -> Graph:
    """An encoder over the graph in path, described by the metadata the
    export wrote into it."""
    sess = session(path)
    meta = sess.get_modelmeta().custom_metadata_map
    kind = meta.get("encoder")
    if kind not in GRAPHS or "model" not in meta or "dim" not in meta:
        raise ValueError(f"{path} is not a speaker encoder graph written by worker.export")
    info = {"runtime": "onnxruntime", "graph": path.name, "exported_at_start": exported}
    return GRAPHS[kind](sess, meta["model"], int(meta["dim"]), info, dict(meta))


# --- the cache -------------------------------------------------------------------

@dataclass(frozen=True)
class GraphKey:
    encoder: str   # "ecapa" | "ge2e"
    model: str     # fingerprint of the weights
    variant: str

    @property
    def filename(self) -> str:
        return f"{self.encoder}-{self.model}-{self.variant}.onnx"


def graph_dir(model_dir: str | Path) -> Path:
    return Path(model_dir) / "onnx"


def ecapa_files(source: str, model_dir: str | Path) -> Path | None:
    """The directory holding the ECAPA model's files: a local source itself,
    or the folder from_hparams filled for a hub id (None until it ran once)."""
    local = ecapa_local_source(source)
    folder = local if local is not None else ecapa_savedir(source, model_dir)
    if (folder / "embedding_model.ckpt").exists() and (folder / "hyperparams.yaml").exists():
        return folder
    return None


def graph_key(kind: str, source: str, model_dir: str | Path) -> GraphKey | None:
    """The key of kind's graph from the weights on disk; None when the
    weights are not on this machine (GE2E without resemblyzer, a hub model
    before its first download). Raises FileNotFoundError for a source that
    cannot hold a model."""
    if kind == "ge2e":
        weights = ge2e_weights_path()
        return GraphKey("ge2e", fingerprint(weights), f"v{EXPORT_VERSION}") if weights is not None else None
    if kind == "ecapa":
        folder = ecapa_files(source, model_dir)
        if folder is None:
            return None
        hparams = hashlib.sha256((folder / "hyperparams.yaml").read_bytes()).hexdigest()[:8]
        return GraphKey("ecapa", fingerprint((folder / "embedding_model.ckpt").resolve()),
                        f"v{EXPORT_VERSION}-{hparams}")
    raise ValueError(f"no ONNX graph for encoder {kind!r}")


def cached_graph(kind: str, source: str, model_dir: str | Path,
                 out: str | Path | None = None) -> tuple[GraphKey, Path] | None:
    """(key, path) of kind's graph when it is already exported (in out,
    default graph_dir(model_dir))."""
    key = graph_key(kind, source, model_dir)
    if key is None:
        return None
    path = Path(out or graph_dir(model_dir)) / key.filename
    return (key, path) if path.is_file() else None


def graph_by_metadata(kind: str, source: str, directory: Path) -> Graph | None:
    """The newest ``<kind>-*.onnx`` in directory whose metadata says kind, this
    export version and (ECAPA) the configured source: what a worker serves when
    it cannot fingerprint the weights itself."""
    candidates = sorted(directory.glob(f"{kind}-*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            graph = open_graph(path)
        except Exception as exc:
            log.warning("skipping %s: %s: %s", path, exc.__class__.__name__, exc)
            continue
        meta = graph.metadata
        if (graph.name == kind and meta.get("export_version") == EXPORT_VERSION
                and (kind != "ecapa" or meta.get("source") == source)):
            graph.info["found_by"] = "metadata"
            return graph
    return None
