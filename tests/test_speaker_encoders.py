"""Speaker encoders with their real weights: GE2E from the resemblyzer
package, ECAPA from a tiny checkpoint through SpeechBrain's loading path."""
from __future__ import annotations

import numpy as np
import pytest

from ecapa_checkpoint import EMBEDDING_DIM, build_tiny_ecapa
from voicetools.paths import REPO
from worker.audio import decode_wav, to_16k
from worker.export.torch_encoders import EcapaEncoder, Ge2eEncoder, load_encoder
from worker.speakers.encoders import Unavailable, ecapa_savedir, fingerprint
from worker.speakers.ge2e_features import mel_filterbank, mel_spectrogram, normalize_level

DATA = REPO / "data"


def speech_16k(name: str) -> np.ndarray:
    return to_16k(decode_wav((DATA / name).read_bytes(), max_seconds=60))


@pytest.fixture(scope="module")
def ge2e() -> Ge2eEncoder:
    return Ge2eEncoder()


def test_mel_filterbank_and_spectrogram_match_librosa():
    import librosa
    assert np.allclose(mel_filterbank(), librosa.filters.mel(sr=16000, n_fft=400, n_mels=40), atol=1e-7)
    wav = speech_16k("gb_male_16k.wav")[:48000]
    ours = mel_spectrogram(wav, mel_filterbank())
    theirs = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    assert ours.shape == theirs.shape
    assert np.allclose(ours, theirs, rtol=1e-4, atol=1e-6 * theirs.max())


def test_ge2e_embeds_as_resemblyzer_does(ge2e):
    from resemblyzer import VoiceEncoder
    reference = VoiceEncoder("cpu", verbose=False)
    wav = speech_16k("us_female_16k.wav")
    for window in (wav[:24000], wav[:32000], wav[:48000], wav):
        ours = ge2e.embed_batch([window])[0]
        theirs = reference.embed_utterance(normalize_level(window))
        assert float(ours @ theirs) > 0.9999
        assert abs(np.linalg.norm(ours) - 1) < 1e-5


def test_ge2e_batch_equals_one_by_one(ge2e):
    a, b = speech_16k("gb_male_16k.wav"), speech_16k("us_female_16k.wav")
    windows = [a[:32000], b[:24000], a[16000:64000], b]
    batched = ge2e.embed_batch(windows)
    alone = np.stack([ge2e.embed_batch([w])[0] for w in windows])
    assert batched.shape == (4, 256) and batched.dtype == np.float32
    assert np.allclose(batched, alone, atol=1e-5)


def test_ge2e_tells_the_sample_speakers_apart(ge2e):
    """Two halves of one synthetic voice score higher than two voices."""
    male, female = speech_16k("gb_male_16k.wav"), speech_16k("us_female_16k.wav")
    e = ge2e.embed_batch([male[:80000], male[80000:], female[:80000]])
    assert e[0] @ e[1] > e[0] @ e[2]


def test_tiny_ecapa_loads_through_from_hparams_offline(tmp_path, monkeypatch):
    # Offline hub: any attempt to reach the network would raise.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = build_tiny_ecapa(tmp_path / "tiny-ecapa")
    encoder = load_encoder("ecapa", str(source), tmp_path / "models")
    assert isinstance(encoder, EcapaEncoder), encoder
    assert encoder.dim == EMBEDDING_DIM
    assert encoder.model == fingerprint(source / "embedding_model.ckpt")
    savedir = ecapa_savedir(str(source), tmp_path / "models")
    assert savedir.parent == tmp_path / "models" and (savedir / "embedding_model.ckpt").exists()

    wav = speech_16k("gb_male_16k.wav")
    windows = [wav[:32000], wav[32000:64000], wav[:48000]]
    batched = encoder.embed_batch(windows)
    alone = np.stack([encoder.embed_batch([w])[0] for w in windows])
    assert batched.shape == (3, EMBEDDING_DIM)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1, atol=1e-5)
    assert np.allclose(batched, alone, atol=1e-5)


def test_ecapa_unavailable_says_how_to_provide_the_model(tmp_path, monkeypatch):
    empty = tmp_path / "empty-model-dir"
    empty.mkdir()
    missing = load_encoder("ecapa", str(empty), tmp_path / "models")
    assert isinstance(missing, Unavailable)
    assert "hyperparams.yaml" in missing.reason and "--ecapa-source" in missing.reason

    absent = load_encoder("ecapa", str(tmp_path / "nowhere"), tmp_path / "models")
    assert isinstance(absent, Unavailable) and "does not exist" in absent.reason

    # The hub path itself, with the hub unreachable by configuration.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = load_encoder("ecapa", "speechbrain/spkrec-ecapa-voxceleb", tmp_path / "models")
    assert isinstance(hub, Unavailable)
    assert "huggingface.co" in hub.reason and "--encoder ge2e" in hub.reason
