"""The worker's speaker encoders: ONNX graphs run by onnxruntime, no torch.

torch alone costs a process about 480 MB of RSS; onnxruntime is already
there for silero. The graphs are exported from the torch models by
``python -m worker.speakers.export``, which a worker runs as a subprocess
(torch lives and dies there) only when the graph for its model is not cached
under ``<model-dir>/onnx/`` yet (graphs.py names it by the weights'
fingerprint).

- ge2e: the graph is the LSTM; mel frames and partial utterances are cut in
  numpy (encoders.ge2e_partials), as with torch.
- ecapa: the graph holds everything encode_batch does to a window:
  SpeechBrain's Fbank (STFT, mel filterbank, dB), the per-window mean
  normalization and the ECAPA-TDNN.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime

from .encoders import (DISABLED_REASON, Encoder, Unavailable, average_partials, ecapa_local_source,
                       ecapa_unavailable_reason, ge2e_partials, ge2e_unavailable_reason, mel_filterbank,
                       same_length_groups, unit_rows)
from .graphs import cached_graph, graph_dir

log = logging.getLogger("worker.speakers")

# A hub download of ECAPA (80 MB) plus the export fits easily.
EXPORT_TIMEOUT_SECONDS = 1800
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where `python -m worker...` resolves


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
class Ge2eGraph:
    """GE2E as resemblyzer's VoiceEncoder.embed_utterance, batched."""
    session: onnxruntime.InferenceSession
    model: str
    dim: int
    info: dict = field(default_factory=dict)
    name = "ge2e"

    def __post_init__(self) -> None:
        self._basis = mel_filterbank()

    def embed_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        parts = [ge2e_partials(w, self._basis) for w in windows]
        [partial_embeds] = self.session.run(None, {"mels": np.concatenate(parts)})
        return average_partials(partial_embeds, [len(p) for p in parts])


@dataclass
class EcapaGraph:
    """ECAPA as EncoderClassifier.encode_batch (without its normalize step)."""
    session: onnxruntime.InferenceSession
    model: str
    dim: int
    info: dict = field(default_factory=dict)
    name = "ecapa"

    def embed_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(windows), self.dim), np.float32)
        for indices in same_length_groups(windows):
            wavs = np.stack([windows[i] for i in indices]).astype(np.float32, copy=False)
            [out[indices]] = self.session.run(None, {"wavs": wavs})
        return unit_rows(out)


GRAPHS = {"ge2e": Ge2eGraph, "ecapa": EcapaGraph}


def open_graph(path: Path, exported: bool = False) -> Ge2eGraph | EcapaGraph:
    """An encoder over the graph in path, described by the metadata the
    export wrote into it."""
    sess = session(path)
    meta = sess.get_modelmeta().custom_metadata_map
    kind = meta.get("encoder")
    if kind not in GRAPHS or "model" not in meta or "dim" not in meta:
        raise ValueError(f"{path} is not a speaker encoder graph written by worker.speakers.export")
    info = {"runtime": "onnxruntime", "graph": path.name, "exported_at_start": exported}
    return GRAPHS[kind](sess, meta["model"], int(meta["dim"]), info)


def run_export(kind: str, source: str, model_dir: Path) -> dict:
    """python -m worker.speakers.export in a subprocess: its JSON result."""
    # --opt=value: a source starting with "-" stays a value.
    command = [sys.executable, "-m", "worker.speakers.export", f"--encoder={kind}", f"--source={source}",
               f"--model-dir={model_dir}"]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=PACKAGE_ROOT, capture_output=True, text=True,
                              timeout=EXPORT_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return {"error": f"the ONNX export of {kind} took longer than {EXPORT_TIMEOUT_SECONDS} s and was stopped"}
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if done.returncode != 0 or "path" not in result:
        log.warning("ONNX export of %s failed (exit %s):\n%s", kind, done.returncode, done.stderr[-4000:])
        if "error" not in result:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            result = {"error": f"the ONNX export of {kind} failed (exit status {done.returncode}: {tail})"}
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def load_onnx_encoder(kind: str, ecapa_source: str = "", model_dir: str | Path = "models") -> Encoder | Unavailable:
    """The configured encoder as an ONNX graph, exporting it first when it is
    not cached; or why it cannot be had. Never raises."""
    if kind not in GRAPHS:
        return Unavailable(kind, DISABLED_REASON)
    model_dir = Path(model_dir).resolve()
    source = ecapa_source
    try:
        if kind == "ecapa":
            local = ecapa_local_source(ecapa_source)
            # The subprocess runs elsewhere: a relative directory would not be found.
            source = str(local) if local is not None else ecapa_source
        cached = cached_graph(kind, source, model_dir)
    except Exception as exc:  # a source that cannot hold a model, a broken install
        return Unavailable(kind, ge2e_unavailable_reason(exc) if kind == "ge2e"
                           else ecapa_unavailable_reason(ecapa_source, exc))
    if cached is not None:
        try:
            return open_graph(cached[1])
        except Exception:
            # Unreadable (a disk that lost it, an older format): export anew.
            log.exception("cached graph %s unreadable; exporting again", cached[1])
            cached[1].unlink(missing_ok=True)
    log.info("exporting speaker encoder %s to ONNX under %s", kind, graph_dir(model_dir))
    result = run_export(kind, source, model_dir)
    if "error" in result:
        return Unavailable(kind, result["error"])
    try:
        encoder = open_graph(Path(result["path"]), exported=bool(result.get("exported")))
    except Exception as exc:
        return Unavailable(kind, f"the exported graph {result['path']} cannot be opened "
                                 f"({exc.__class__.__name__}: {exc})")
    encoder.info["export_seconds"] = result["wall_seconds"]
    return encoder
