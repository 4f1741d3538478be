"""Encoder time per window, torch against onnxruntime, one thread each.

    .venv/bin/voicestream-encoder-times --encoder ge2e
    .venv/bin/voicestream-encoder-times --encoder ecapa --ecapa-source /tmp/full-ecapa --model-dir /tmp/m

Cuts 2 s windows of real speech (data/*.wav, 16 kHz), embeds them one at a
time and in batches of 8 with the torch encoder (speakers/export/torch_encoders.py) and with the
ONNX graph a worker serves (speakers/loader.py, exported first if missing), and
prints the median milliseconds per call and the lowest cosine between the two
runtimes' embeddings. Both run in this process with one intra-op thread, as a
worker does.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from voicetools.paths import DATA
from voicetools.percentile import percentile
from worker.audio import decode_wav, to_16k
from worker.export.torch_encoders import load_encoder
from worker.speakers.encoders import Encoder, Unavailable
from worker.speakers.loader import load_onnx_encoder

PROG = "voicestream-encoder-times"


def speech_windows(seconds: float = 2.0, hop: float = 0.5) -> list[np.ndarray]:
    windows = []
    for path in sorted(DATA.glob("*.wav")):
        wav = to_16k(decode_wav(path.read_bytes(), max_seconds=600))
        size, step = int(seconds * 16000), int(hop * 16000)
        windows += [wav[i:i + size] for i in range(0, len(wav) - size + 1, step)]
    return windows


def median_ms(encoders: dict[str, Encoder], batches: list[list[np.ndarray]]) -> dict[str, float]:
    """Median ms per call of each encoder; calls alternate between them, so
    a busy spell of the machine weighs on both alike."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for batch in batches:
        for name, encoder in encoders.items():
            started = time.perf_counter()
            encoder.embed_batch(batch)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: round(percentile(t, 50) or 0.0, 1) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", choices=("ge2e", "ecapa"), default="ge2e")
    p.add_argument("--ecapa-source", default="speechbrain/spkrec-ecapa-voxceleb")
    p.add_argument("--model-dir", default="models")
    p.add_argument("--calls", type=int, default=30, help="timed calls per case")
    a = p.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    encoders: dict[str, Encoder] = {}
    for name, loaded in (("torch", load_encoder(a.encoder, a.ecapa_source, a.model_dir)),
                         ("onnxruntime", load_onnx_encoder(a.encoder, a.ecapa_source, a.model_dir))):
        if isinstance(loaded, Unavailable):
            print(loaded.reason, file=sys.stderr)
            return 1
        encoders[name] = loaded
    reference, graph = encoders["torch"], encoders["onnxruntime"]
    windows = speech_windows()
    singles = [[w] for w in windows[:a.calls]]
    eights = [windows[i:i + 8] for i in range(0, 8 * a.calls, 8) if len(windows[i:i + 8]) == 8][:a.calls]
    cosine = float((reference.embed_batch(windows) * graph.embed_batch(windows)).sum(axis=1).min())
    result: dict[str, object] = {"encoder": a.encoder, "model": graph.model, "windows": len(windows),
                                 "min_cosine": round(cosine, 6)}
    for case, batches in (("ms_per_window", singles), ("ms_per_batch_of_8", eights)):
        median_ms(encoders, batches[:2])  # warm-up
        for name, ms in median_ms(encoders, batches).items():
            result[f"{name}_{case}"] = ms
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
