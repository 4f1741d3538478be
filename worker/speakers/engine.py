"""The one thread that embeds speech windows with a worker's speaker encoder.

Request threads hand their windows to this thread and wait: windows of
different accounts that wait at the same time go through the model in one
call, and one embedding thread per process is what two cores shared by three
workers allow.

The thread also loads the encoder, so a worker serves VAD from its first
second while the model loads (or its ONNX export runs, or either fails).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from .encoders import Encoder, Unavailable
from .windows import MELS, WAVS

log = logging.getLogger("worker.speakers")


Embedded = tuple[np.ndarray, float]  # encoder outputs, encoder ms of the batch they ran in


@dataclass(frozen=True, slots=True)
class Job:
    kind: str  # windows.WAVS (16 kHz samples) or windows.MELS (GE2E mel frames)
    inputs: list[np.ndarray]
    future: Future[Embedded]


class EncoderUnavailable(RuntimeError):
    """No encoder to embed with; the message tells the client what to do."""


class SpeakerEngine:
    LOADING, READY, UNAVAILABLE = "loading", "ready", "unavailable"

    def __init__(self, kind: str, loader: Callable[[], Encoder | Unavailable], max_batch: int = 32) -> None:
        self.kind = kind
        self.max_batch = max_batch
        self.state = self.LOADING
        self.reason = ""
        self.encoder: Encoder | None = None
        self.windows_embedded = 0  # encoder inputs (windows, GE2E partials), on /health: who pays for embedding
        self._loader = loader
        self._ready = threading.Event()
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="speaker-engine", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        return self.state == self.READY

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """True once loading ended (ready or unavailable)."""
        return self._ready.wait(timeout)

    def status(self) -> dict[str, object]:
        status: dict[str, object] = {"encoder": self.kind, "state": self.state}
        if self.encoder is not None:
            status.update(model=self.encoder.model, dim=self.encoder.dim, windows_embedded=self.windows_embedded,
                          **getattr(self.encoder, "info", {}))
        if self.reason:
            status["reason"] = self.reason
        return status

    def unavailable_message(self) -> str:
        if self.state == self.LOADING:
            return f"speaker encoder {self.kind} is still loading on this worker; retry in a few seconds"
        return f"speaker encoder unavailable: {self.reason}"

    def embed(self, inputs: list[np.ndarray], kind: str = WAVS) -> Embedded:
        """(unit embeddings, encoder ms of the batch they ran in) of
        recordings or windows as 16 kHz samples (WAVS), or of GE2E mel windows
        (MELS, what the tracker's GE2E windows hand over).
        Raises EncoderUnavailable when there is no encoder."""
        if not self.ready:
            raise EncoderUnavailable(self.unavailable_message())
        future: Future[Embedded] = Future()
        self._jobs.put(Job(kind, inputs, future))
        return future.result()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)

    def _load(self) -> Encoder | Unavailable:
        """The encoder, warmed up, or why there is none. Never raises."""
        try:
            loaded = self._loader()
        except Exception as exc:  # loaders should not raise; a broken install might
            return Unavailable(self.kind, f"{exc.__class__.__name__}: {exc}")
        if isinstance(loaded, Unavailable):
            return loaded
        try:
            # The first call allocates and warms caches; pay it here, not on a frame.
            loaded.embed_batch([np.zeros(32000, np.float32) + 1e-3])
        except Exception as exc:
            log.exception("speaker encoder %s failed its first embedding", self.kind)
            return Unavailable(self.kind, f"the {self.kind} encoder (model {loaded.model}) loaded but cannot embed "
                                          f"({exc.__class__.__name__}: {exc})")
        return loaded

    def _start(self) -> None:
        started = time.perf_counter()
        try:
            loaded = self._load()
            if isinstance(loaded, Unavailable):
                self.reason = loaded.reason
                self.state = self.UNAVAILABLE
                log.warning("speaker encoder %s unavailable: %s", self.kind, loaded.reason)
            else:
                self.encoder = loaded
                self.state = self.READY
                log.info("speaker encoder %s (model %s, dim %d) ready in %.1f s",
                         self.kind, loaded.model, loaded.dim, time.perf_counter() - started)
        finally:
            # Whatever happened, loading is over: callers waiting for it go on.
            if self.state == self.LOADING:
                self.reason = "the speaker encoder's loading ended without an encoder (see the worker's log)"
                self.state = self.UNAVAILABLE
            self._ready.set()

    def _run(self) -> None:
        self._start()
        while True:
            item = self._jobs.get()
            if item is None:
                return
            batch = [item]
            size = len(item.inputs)
            while size < self.max_batch:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._jobs.put(None)
                    break
                batch.append(item)
                size += len(item.inputs)
            for kind in {job.kind for job in batch}:
                self._run_batch(kind, [job for job in batch if job.kind == kind])

    def _run_batch(self, kind: str, batch: list[Job]) -> None:
        inputs = [x for job in batch for x in job.inputs]
        assert self.encoder is not None  # jobs are queued only once ready
        started = time.perf_counter()
        try:
            outputs = encode(self.encoder, kind, inputs)
        except Exception as exc:
            for job in batch:
                job.future.set_exception(exc)
            return
        encoder_ms = (time.perf_counter() - started) * 1000
        self.windows_embedded += len(inputs)
        start = 0
        for job in batch:
            job.future.set_result((outputs[start:start + len(job.inputs)], encoder_ms))
            start += len(job.inputs)


def encode(encoder: Encoder, kind: str, inputs: list[np.ndarray]) -> np.ndarray:
    """The encoder's unit embeddings of inputs of one kind."""
    if kind == MELS:
        return encoder.embed_mels(inputs)  # type: ignore[attr-defined]  # GE2E's windows: only Ge2eGraph makes them
    return encoder.embed_batch(inputs)
