"""The torch speaker encoders: the reference the ONNX graphs are exported from
and checked against, and what voicestream-calibrate measures.

Export tools only: a worker never imports this module (it serves the graphs,
worker/speakers/graphs.py). torch, SpeechBrain and resemblyzer are imported
inside the constructors, so load_encoder can say what is missing instead of
failing at import.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..speakers.encoders import (
    DISABLED_REASON,
    SAMPLE_RATE,
    Encoder,
    Unavailable,
    average_partials,
    ecapa_local_source,
    ecapa_savedir,
    ecapa_unavailable_reason,
    fingerprint,
    ge2e_unavailable_reason,
    ge2e_weights_path,
    same_length_groups,
    unit_rows,
)
from ..speakers.ge2e_features import GE2E_DIM, ge2e_partials, mel_filterbank


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
        out: list[np.ndarray] = [np.empty(0)] * len(windows)  # every index is filled below
        with torch.inference_mode():
            for indices in same_length_groups(windows):
                wavs = torch.from_numpy(np.stack([windows[i] for i in indices]))
                emb = self.classifier.encode_batch(wavs).reshape(len(indices), -1).numpy()
                for i, e in zip(indices, emb, strict=True):
                    out[i] = e
        return unit_rows(np.stack(out))



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
        if weights is None:
            raise ModuleNotFoundError("No module named 'resemblyzer'")
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


def load_encoder(kind: str, ecapa_source: str = "", model_dir: str | Path = "models") -> Encoder | Unavailable:
    """The configured torch encoder, or why it cannot be had. Never raises."""
    if kind == "ge2e":
        try:
            return Ge2eEncoder()
        except Exception as exc:  # a broken install is a reason to report, not a crash
            return Unavailable(kind, ge2e_unavailable_reason(exc))
    if kind == "ecapa":
        try:
            return EcapaEncoder(ecapa_source, model_dir)
        except Exception as exc:
            return Unavailable(kind, ecapa_unavailable_reason(ecapa_source, exc))
    return Unavailable(kind, DISABLED_REASON)
