"""silero's own cost on the frames the benchmark streams: the floor a served
system's CPU per frame is compared with.

The frames are cut into the model's chunks exactly as a worker cuts them
(worker.vad.VadStream: 512 samples at 16 kHz, 256 at 8 kHz, with their
context), then run through the same ONNX graph (worker.vad.SileroOnnx) in
batches of BATCH chunks of one rate, the cheapest way the model runs: no HTTP,
no JSON, no Python per frame, no log. CPU time (this process's, a single
thread as in a worker) per chunk at each rate, weighted by the chunks the
streamed frames hold, gives ms per frame. Measured in the benchmark's own
run, on its machine, so a report carries its own ratio.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from worker.audio import decode_wav
from worker.vad import CHUNK_SAMPLES, STATE_SHAPE, SileroOnnx, VadStream

from .audio import StreamSource

# The batch of the floor: 32 and 128 chunks cost the same per chunk
# (55 µs on the machine), a batch of 1 twice that.
BATCH = 128
REPEATS = 3  # the floor is the fastest of these passes (the least disturbed)


@dataclass(frozen=True)
class Floor:
    us_per_chunk: dict[int, float]            # per rate: CPU per chunk, batched
    chunks_per_frame: dict[str, float]        # per source: chunks its frames hold, on average
    rates: dict[str, int]                     # per source: its rate
    batch: int = BATCH

    def ms_per_frame(self, sources: Sequence[StreamSource]) -> float:
        """silero's CPU per frame when these streams send (one source each)."""
        costs = [self.chunks_per_frame[s.name] * self.us_per_chunk[self.rates[s.name]] / 1000 for s in sources]
        return sum(costs) / len(costs) if costs else float("nan")

    def as_dict(self) -> dict:
        return {"batch": self.batch, "us_per_chunk": {str(r): round(us, 2) for r, us in self.us_per_chunk.items()},
                "chunks_per_frame": {name: round(c, 3) for name, c in self.chunks_per_frame.items()}}


def cut(source: StreamSource) -> np.ndarray:
    """The model inputs (context + chunk) of a source's frames, cut as a worker cuts them."""
    stream = VadStream(source.sample_rate)
    return np.concatenate([stream.take_chunks(decode_wav(wav).samples) for wav in source.frames])


def measure(sources: Sequence[StreamSource], model: SileroOnnx | None = None) -> Floor:
    model = model or SileroOnnx()
    inputs = {s.name: cut(s) for s in sources}
    by_rate: dict[int, list[np.ndarray]] = {}
    for s in sources:
        by_rate.setdefault(s.sample_rate, []).append(inputs[s.name])
    us: dict[int, float] = {}
    for rate, parts in by_rate.items():
        x = np.concatenate(parts)
        n = (len(x) // BATCH) * BATCH or len(x)
        state = np.zeros((STATE_SHAPE[0], BATCH, STATE_SHAPE[2]), np.float32)
        best = float("inf")
        for _ in range(REPEATS):
            started = time.process_time()
            for i in range(0, n, BATCH):
                batch = x[i:i + BATCH]
                model(batch, state[:, :len(batch)], rate)
            best = min(best, time.process_time() - started)
        us[rate] = best / n * 1e6
    assert set(us) <= set(CHUNK_SAMPLES)
    return Floor(us, {s.name: len(inputs[s.name]) / len(s.frames) for s in sources},
                 {s.name: s.sample_rate for s in sources})
