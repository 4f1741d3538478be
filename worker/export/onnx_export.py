"""Export a speaker encoder to ONNX and check the graph against the torch model.

The model is loaded through the same path as the torch encoders
(torch_encoders.py: EncoderClassifier.from_hparams for ECAPA, resemblyzer's
packaged weights for GE2E), exported with torch.onnx.export (the
torch.export-based exporter for ECAPA, the TorchScript one for GE2E's LSTM; dynamic batch and time
axes), checked against the
torch model and then renamed into the output directory under the name
worker/speakers/graphs.py gives it. Several exports at once are fine: one
exports under a lock while the others wait and then find the file.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..speakers.encoders import DISABLED_REASON, SAMPLE_RATE, Encoder, Unavailable, unavailable_reason
from ..speakers.graphs import EXPORT_VERSION, Ge2eGraph, GraphKey, cached_graph, graph_key, open_graph
from ..speakers.loader import export_command
from .torch_encoders import EcapaEncoder, Ge2eEncoder, load_encoder

# The torch.export-based exporter writes opset 18; asked for 17 it fails to
# convert ECAPA's Pad nodes down. onnxruntime runs 18.
OPSET = 18
# The TorchScript exporter (GE2E's, export_ge2e) writes up to opset 17 well.
GE2E_OPSET = 17
# An export is accepted only if it embeds like the torch model it came from.
MIN_COSINE = 0.9999


class ExportError(RuntimeError):
    """The model loaded but its graph could not be made (or was wrong)."""


class ModelUnavailable(RuntimeError):
    """No model to export; the message says how to provide one."""


# --- graphs ------------------------------------------------------------------

def ecapa_graph(encoder: EcapaEncoder):
    """wavs (batch, samples) -> embeddings (batch, dim), as
    EncoderClassifier.encode_batch computes them for full-length wavs."""
    import torch

    mods = encoder.classifier.mods
    norm = mods.mean_var_norm
    if getattr(norm, "norm_type", None) != "sentence" or getattr(norm, "std_norm", True):
        raise ExportError("only mean_var_norm with norm_type 'sentence' and std_norm False (as "
                          "spkrec-ecapa-voxceleb) is exported; this model's hyperparams.yaml differs")

    class EcapaGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.compute_features = mods.compute_features
            self.embedding_model = mods.embedding_model

        def forward(self, wavs: torch.Tensor) -> torch.Tensor:
            feats = self.compute_features(wavs)
            # mean_var_norm for windows of relative length 1: each window minus
            # its mean over time. InputNormalization loops over the batch in
            # Python, which would fix the batch size in the graph.
            feats = feats - feats.mean(dim=1, keepdim=True)
            return self.embedding_model(feats).squeeze(1)

    return EcapaGraph().eval()


@contextlib.contextmanager
def ecapa_tracing_patch() -> Iterator[None]:
    """SpeechBrain's length_to_mask sizes its mask with len(lengths), a
    Python int to the tracer, which would fix the batch size in the graph.
    The same mask by broadcasting, while exporting only."""
    import speechbrain.lobes.models.ECAPA_TDNN as ecapa_module
    import torch

    def length_to_mask(length, max_len=None, dtype=None, device=None):
        if max_len is None:
            raise ExportError("length_to_mask without max_len cannot be exported")
        mask = torch.arange(max_len, device=length.device, dtype=length.dtype) < length.unsqueeze(1)
        return mask.to(dtype=dtype or length.dtype, device=device or length.device)

    original = ecapa_module.length_to_mask
    ecapa_module.length_to_mask = length_to_mask
    try:
        yield
    finally:
        ecapa_module.length_to_mask = original


def export_graph(encoder: Encoder, key: GraphKey, source: str, destination: Path) -> None:
    import torch

    metadata = {"encoder": key.encoder, "model": key.model, "variant": key.variant, "dim": str(encoder.dim),
                "source": source, "export_version": EXPORT_VERSION, "torch": torch.__version__}
    if isinstance(encoder, Ge2eEncoder):
        export_ge2e(encoder, destination, metadata)
        return
    if not isinstance(encoder, EcapaEncoder):
        raise ExportError(f"no graph for {type(encoder).__name__}")
    dynamic = torch.export.Dim.DYNAMIC
    # Batch 2, not 1: the exporter would take a size of 1 for a constant.
    example = torch.randn(2, 2 * SAMPLE_RATE) * 0.1
    with ecapa_tracing_patch(), torch.no_grad():
        program = torch.onnx.export(ecapa_graph(encoder), (example,), dynamo=True, opset_version=OPSET,
                                    input_names=["wavs"], output_names=["embeddings"],
                                    dynamic_shapes={"wavs": {0: dynamic, 1: dynamic}})
    if program is None:  # only the legacy exporter (dynamo=False) returns nothing
        raise ExportError("torch.onnx.export returned no program")
    program.model.metadata_props.update(metadata)
    program.save(str(destination))


def export_ge2e(encoder: Ge2eEncoder, destination: Path, metadata: dict[str, str]) -> None:
    """The GE2E LSTM with dynamic batch AND time axes: the speaker tracker
    embeds windows of 0.3 to 1 s (30-100 mel frames). torch.export fixes an
    LSTM's sequence length to the example's ("tracing inferred a static shape
    of 100"), so this one goes through the TorchScript exporter, whose ONNX LSTM
    takes any length."""
    import warnings

    import onnx
    import torch

    example = torch.rand(3, 100, 40)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and batch-first RNN notes
        torch.onnx.export(encoder.net, (example,), str(destination), dynamo=False, opset_version=GE2E_OPSET,
                          input_names=["mels"], output_names=["embeddings"],
                          dynamic_axes={"mels": {0: "windows", 1: "frames"}, "embeddings": {0: "windows"}})
    model = onnx.load(str(destination))
    for name, value in metadata.items():
        model.metadata_props.add(key=name, value=value)
    onnx.save(model, str(destination))


def check_graph(path: Path, encoder: Encoder) -> float:
    """Lowest cosine between the graph's and the torch model's embeddings of
    a few test windows (batched, alone, of several lengths)."""
    graph = open_graph(path)
    rng = np.random.default_rng(0)
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    # Noise under a gliding tone: not speech, but it exercises every band.
    signal = (0.3 * np.sin(2 * np.pi * (150 + 400 * t) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    windows = [signal[:int(1.5 * SAMPLE_RATE)], signal[:2 * SAMPLE_RATE], signal[SAMPLE_RATE:3 * SAMPLE_RATE],
               signal]
    ours = graph.embed_batch(windows)
    theirs = encoder.embed_batch(windows)
    alone = np.stack([graph.embed_batch([w])[0] for w in windows[:2]])
    lowest = float(min((ours * theirs).sum(axis=1).min(), (alone * theirs[:2]).sum(axis=1).min()))
    if isinstance(encoder, Ge2eEncoder) and isinstance(graph, Ge2eGraph):
        # The tracker's windows: 0.3 to 1 s of mel frames, batched by length.
        import torch

        mels = [m[:frames] for m in encoder.partials(signal) for frames in (30, 50, 100)]
        with torch.inference_mode():
            reference = np.concatenate([encoder.net(torch.from_numpy(np.stack([m]))).numpy() for m in mels])
        lowest = min(lowest, float((graph.embed_mels(mels) * reference).sum(axis=1).min()))
    return lowest


# --- cache -------------------------------------------------------------------

@contextlib.contextmanager
def export_lock(out: Path) -> Iterator[None]:
    """One export at a time per cache directory, across processes. The lock
    goes with its holder, even a killed one."""
    with open(out / ".export.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def remove_stale_temporaries(out: Path) -> None:
    """Under the lock, any temporary file is left over from a killed export."""
    for tmp in out.glob(".*.onnx.*.tmp"):
        tmp.unlink(missing_ok=True)


def load_torch_encoder(kind: str, source: str, model_dir: Path) -> Encoder:
    try:
        import torch
    except ImportError as exc:
        raise ModelUnavailable(unavailable_reason(kind, source, exc)) from exc
    torch.set_num_threads(1)  # workers may be serving on the same cores
    loaded = load_encoder(kind, source, model_dir)
    if isinstance(loaded, Unavailable):
        raise ModelUnavailable(loaded.reason)
    return loaded


def ensure_graph(kind: str, source: str, model_dir: Path, out: Path) -> dict:
    """The graph's description, exporting it unless it is already cached.
    Call under export_lock."""
    started = time.perf_counter()
    cached = cached_graph(kind, source, model_dir, out)
    if cached is not None:
        cached_key, cached_path = cached
        return {"path": str(cached_path), "encoder": cached_key.encoder, "model": cached_key.model,
                "exported": False}
    encoder = load_torch_encoder(kind, source, model_dir)
    # A hub model is on disk now: its key is known only from here.
    key = graph_key(kind, source, model_dir)
    if key is None:
        raise ExportError(f"the {kind} weights are not on disk after loading the model (model dir {model_dir})")
    if key.model != encoder.model:
        raise ExportError(f"weights changed while loading ({key.model} on disk, {encoder.model} loaded)")
    path = out / key.filename
    if not path.is_file():
        tmp = out / f".{key.filename}.{os.getpid()}.tmp"
        try:
            export_graph(encoder, key, source, tmp)
            cosine = check_graph(tmp, encoder)
            if cosine < MIN_COSINE:
                raise ExportError(f"the exported graph embeds unlike the torch model (cosine {cosine:.6f} "
                                  f"< {MIN_COSINE})")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)  # readers see the whole file or none
        finally:
            tmp.unlink(missing_ok=True)
    return {"path": str(path), "encoder": key.encoder, "model": key.model, "dim": encoder.dim, "exported": True,
            "seconds": round(time.perf_counter() - started, 1)}


def run(kind: str, source: str, model_dir: Path, out: Path) -> dict:
    if kind not in ("ge2e", "ecapa"):
        return {"error": DISABLED_REASON}
    try:
        out.mkdir(parents=True, exist_ok=True)
        with export_lock(out):
            remove_stale_temporaries(out)
            return ensure_graph(kind, source, model_dir, out)
    except ModelUnavailable as exc:
        return {"error": str(exc)}
    except FileNotFoundError as exc:  # a model directory that cannot hold a model
        return {"error": unavailable_reason(kind, source, exc)}
    except Exception as exc:
        traceback.print_exc()
        first_line = re.sub(r"\x1b\[[0-9;]*m", "", (str(exc).strip().splitlines() or [""])[0])[:300]
        return {"error": f"{kind.upper()} model loaded but its ONNX export failed ({exc.__class__.__name__}: "
                         f"{first_line}). Run `{export_command(kind, source)}` to see the whole error."}
