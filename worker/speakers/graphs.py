"""Where the ONNX graph of a speaker encoder is cached, found without torch.

A graph is exported once (export.py) and cached under ``<model-dir>/onnx/``
as ``<encoder>-<model>-<variant>.onnx``:
- ``model`` is the fingerprint of the weights, the same one voiceprints
  record, so voiceprints enrolled before stay comparable;
- ``variant`` covers what else shapes the graph: the export code's version
  and, for ECAPA, hyperparams.yaml (features, sizes).
New weights or a new export give a new name; nothing is overwritten.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .encoders import ecapa_local_source, ecapa_savedir, fingerprint, ge2e_weights_path

# Bump when export.py changes what it writes: caches of the old code are then
# exported again instead of being reused.
EXPORT_VERSION = "1"


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


def ge2e_key() -> GraphKey:
    return GraphKey("ge2e", fingerprint(ge2e_weights_path()), f"v{EXPORT_VERSION}")


def ecapa_files(source: str, model_dir: str | Path) -> Path | None:
    """The directory holding the ECAPA model's files: a local source itself,
    or the folder from_hparams filled for a hub id (None until it ran once)."""
    local = ecapa_local_source(source)
    folder = local if local is not None else ecapa_savedir(source, model_dir)
    if (folder / "embedding_model.ckpt").exists() and (folder / "hyperparams.yaml").exists():
        return folder
    return None


def ecapa_key(folder: Path) -> GraphKey:
    hparams = hashlib.sha256((folder / "hyperparams.yaml").read_bytes()).hexdigest()[:8]
    return GraphKey("ecapa", fingerprint((folder / "embedding_model.ckpt").resolve()),
                    f"v{EXPORT_VERSION}-{hparams}")


def graph_key(kind: str, source: str, model_dir: str | Path) -> GraphKey | None:
    """The key of kind's graph from the weights on disk; None when the
    weights are not on disk yet (a hub model before its first download).
    Raises FileNotFoundError for a source that cannot hold a model."""
    if kind == "ge2e":
        return ge2e_key()
    if kind == "ecapa":
        folder = ecapa_files(source, model_dir)
        return ecapa_key(folder) if folder is not None else None
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
