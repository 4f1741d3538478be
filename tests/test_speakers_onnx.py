"""Speaker encoders served as ONNX graphs: exported by a real subprocess
(python -m worker.export) through the production loading path,
compared with the torch models on real speech, cached, shared by workers that
start together, and a worker that serves them without torch in its process.

This test process imports torch (for the reference embeddings); the workers
it starts must not."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from ecapa_checkpoint import EMBEDDING_DIM, FULL, build_tiny_ecapa
from speaker_helpers import call, read_wav, wait_encoders
from voicestream.wav import encode_wav
from voicetools.cluster import make_system
from voicetools.paths import REPO
from worker.audio import decode_wav, to_16k
from worker.export.torch_encoders import EcapaEncoder, Ge2eEncoder, load_encoder
from worker.speakers.encoders import Unavailable, fingerprint
from worker.speakers.ge2e_features import partial_slices
from worker.speakers.graphs import EcapaGraph, Ge2eGraph, graph_dir
from worker.speakers.loader import load_onnx_encoder

DATA = REPO / "data"
MIN_COSINE = 0.999


def wav_16k(path: Path) -> np.ndarray:
    return to_16k(decode_wav(path.read_bytes(), max_seconds=600))


def windows_of(wavs: list[np.ndarray], seconds: float = 2.0, hop: float = 1.0) -> list[np.ndarray]:
    """Streaming-sized windows of each recording, plus each whole recording."""
    size, step = int(seconds * 16000), int(hop * 16000)
    out = []
    for wav in wavs:
        out += [wav[i:i + size] for i in range(0, len(wav) - size + 1, step)] + [wav]
    return out


@pytest.fixture(scope="module")
def repo_speech() -> list[np.ndarray]:
    return [wav_16k(p) for p in sorted(DATA.glob("*.wav"))]


@pytest.fixture(scope="module")
def speaker_speech(speakers_dir) -> list[np.ndarray]:
    """../shared/data/speakers: every file of the 4 speakers (skips if absent)."""
    return [wav_16k(p) for p in sorted(speakers_dir.glob("*/*.wav"))]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_embeds_like(graph, reference, windows: list[np.ndarray]) -> None:
    ours, theirs = graph.embed_batch(windows), reference.embed_batch(windows)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    low = float(cosines(ours, theirs).min())
    assert low > MIN_COSINE, f"lowest cosine {low:.6f} over {len(windows)} windows"


# --- GE2E --------------------------------------------------------------------

def test_partial_slices_are_resemblyzers():
    from resemblyzer import VoiceEncoder
    for n in (1, 159, 160, 8000, 16000, 24000, 25599, 25600, 25601, 32000, 40000, 48000, 99999, 160000, 480000):
        assert partial_slices(n) == VoiceEncoder.compute_partial_slices(n, rate=1.3, min_coverage=0.75), n


@pytest.fixture(scope="session")
def ge2e_models(tmp_path_factory) -> Path:
    """A model dir whose GE2E graph was exported by the first load."""
    return tmp_path_factory.mktemp("ge2e-models")


@pytest.fixture(scope="module")
def ge2e_graph(ge2e_models) -> Ge2eGraph:
    graph = load_onnx_encoder("ge2e", model_dir=ge2e_models)
    assert isinstance(graph, Ge2eGraph), graph
    return graph


@pytest.fixture(scope="module")
def ge2e_torch() -> Ge2eEncoder:
    return Ge2eEncoder()


def test_ge2e_graph_is_exported_once_and_then_reused(ge2e_graph, ge2e_torch, ge2e_models):
    assert ge2e_graph.info["exported_at_start"] is True and ge2e_graph.info["runtime"] == "onnxruntime"
    assert (ge2e_graph.name, ge2e_graph.model, ge2e_graph.dim) == (ge2e_torch.name, ge2e_torch.model, 256)
    [path] = graph_dir(ge2e_models).glob("*.onnx")
    assert path.name == ge2e_graph.info["graph"] and path.name.startswith(f"ge2e-{ge2e_torch.model}-")
    inode = path.stat().st_ino
    again = load_onnx_encoder("ge2e", model_dir=ge2e_models)
    assert again.info["exported_at_start"] is False and "export_seconds" not in again.info
    assert path.stat().st_ino == inode and not list(graph_dir(ge2e_models).glob(".*.tmp"))


def test_ge2e_graph_embeds_like_torch_on_repo_speech(ge2e_graph, ge2e_torch, repo_speech):
    assert_embeds_like(ge2e_graph, ge2e_torch, windows_of(repo_speech))


def test_ge2e_graph_embeds_like_torch_on_the_speaker_set(ge2e_graph, ge2e_torch, speaker_speech):
    assert_embeds_like(ge2e_graph, ge2e_torch, windows_of(speaker_speech))


def test_ge2e_graph_batch_equals_one_by_one(ge2e_graph, repo_speech):
    windows = windows_of(repo_speech)[:8]
    alone = np.stack([ge2e_graph.embed_batch([w])[0] for w in windows])
    assert np.allclose(ge2e_graph.embed_batch(windows), alone, atol=1e-5)


# --- ECAPA -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ecapa(tmp_path_factory) -> Path:
    return build_tiny_ecapa(tmp_path_factory.mktemp("ecapa") / "tiny-ecapa")


def test_tiny_ecapa_graph_embeds_like_from_hparams(tiny_ecapa, tmp_path, monkeypatch, repo_speech, speakers_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # inherited by the export subprocess
    graph = load_onnx_encoder("ecapa", str(tiny_ecapa), tmp_path / "models")
    assert isinstance(graph, EcapaGraph), graph
    reference = EcapaEncoder(str(tiny_ecapa), tmp_path / "models")
    assert graph.model == reference.model == fingerprint(tiny_ecapa / "embedding_model.ckpt")
    assert graph.dim == EMBEDDING_DIM
    speech = repo_speech + [wav_16k(p) for p in sorted(speakers_dir.glob("*/*.wav"))]
    assert_embeds_like(graph, reference, windows_of(speech))
    # Equal lengths share a batch (8 windows), others go alone: same results.
    windows = windows_of(repo_speech)[:8] + [repo_speech[0][:30000]]
    alone = np.stack([graph.embed_batch([w])[0] for w in windows])
    assert np.allclose(graph.embed_batch(windows), alone, atol=1e-5)


def test_real_size_ecapa_graph_embeds_like_from_hparams(tmp_path, monkeypatch, speaker_speech):
    """speechbrain/spkrec-ecapa-voxceleb's sizes (random weights): the
    export and the graph hold at full size too."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = build_tiny_ecapa(tmp_path / "full-ecapa", sizes=FULL)
    graph = load_onnx_encoder("ecapa", str(source), tmp_path / "models")
    assert isinstance(graph, EcapaGraph), graph
    assert graph.dim == FULL.embedding_dim
    reference = EcapaEncoder(str(source), tmp_path / "models")
    assert graph.model == reference.model
    # Every third file keeps the torch side of this test short.
    assert_embeds_like(graph, reference, windows_of(speaker_speech[::3]))


def test_an_unreadable_cached_graph_is_exported_again(tiny_ecapa, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first = load_onnx_encoder("ecapa", str(tiny_ecapa), tmp_path / "models")
    [path] = graph_dir(tmp_path / "models").glob("*.onnx")
    path.write_bytes(b"not a graph")
    again = load_onnx_encoder("ecapa", str(tiny_ecapa), tmp_path / "models")
    assert isinstance(again, EcapaGraph) and again.info["exported_at_start"] is True
    wav = np.sin(np.arange(32000) / 9).astype(np.float32)
    assert np.allclose(again.embed_batch([wav]), first.embed_batch([wav]), atol=1e-6)


def test_concurrent_exports_write_one_graph(tiny_ecapa, tmp_path):
    """Three workers starting at once each run the export: one exports under
    the lock, the others wait and find its file."""
    command = [sys.executable, "-m", "worker.export", "--encoder", "ecapa", "--source", str(tiny_ecapa),
               "--model-dir", str(tmp_path / "models")]
    procs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}) for _ in range(3)]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["exported"] for r in results) == [False, False, True]
    assert len({r["path"] for r in results}) == 1
    assert sorted(p.name for p in graph_dir(tmp_path / "models").iterdir()) == \
        [".export.lock", Path(results[0]["path"]).name]


# --- failures keep today's messages -------------------------------------------

def test_without_a_model_the_reason_says_how_to_provide_it(tmp_path, monkeypatch):
    empty = tmp_path / "empty-model-dir"
    empty.mkdir()
    missing = load_onnx_encoder("ecapa", str(empty), tmp_path / "models")
    assert isinstance(missing, Unavailable)
    assert "hyperparams.yaml" in missing.reason and "--ecapa-source" in missing.reason

    absent = load_onnx_encoder("ecapa", str(tmp_path / "nowhere"), tmp_path / "models")
    assert isinstance(absent, Unavailable) and "does not exist" in absent.reason

    # The hub, unreachable by configuration: the export subprocess fails to
    # load the model and says so as load_encoder does.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = load_onnx_encoder("ecapa", "speechbrain/spkrec-ecapa-voxceleb", tmp_path / "models")
    assert isinstance(hub, Unavailable)
    assert hub.reason == load_encoder("ecapa", "speechbrain/spkrec-ecapa-voxceleb", tmp_path / "models").reason
    assert "huggingface.co" in hub.reason and "--encoder ge2e" in hub.reason
    assert not list(graph_dir(tmp_path / "models").glob("*.onnx"))


def test_a_model_the_export_cannot_handle_is_unavailable_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = build_tiny_ecapa(tmp_path / "std-norm-ecapa")
    hparams = source / "hyperparams.yaml"
    # Variance normalization of the features: loads fine, not exportable as is.
    hparams.write_text(hparams.read_text().replace("norm_type: sentence\n    std_norm: False",
                                                   "norm_type: sentence\n    std_norm: True"))
    assert isinstance(load_encoder("ecapa", str(source), tmp_path / "models"), EcapaEncoder)
    failed = load_onnx_encoder("ecapa", str(source), tmp_path / "models")
    assert isinstance(failed, Unavailable)
    assert "ONNX export failed" in failed.reason and "std_norm" in failed.reason
    assert "python -m worker.export --encoder ecapa" in failed.reason
    assert not list(graph_dir(tmp_path / "models").glob("*.onnx"))
    assert not list(graph_dir(tmp_path / "models").glob(".*.tmp"))


# --- workers -----------------------------------------------------------------

def serving_process(system, i: int) -> psutil.Process:
    [child] = psutil.Process(system.workers[i].popen.pid).children()
    return child


def assert_no_torch(system, i: int) -> None:
    health = call(f"{system.worker_url(i)}/health").body
    assert health["torch_loaded"] is False and health["speakers"]["runtime"] == "onnxruntime", health
    maps = Path(f"/proc/{serving_process(system, i).pid}/maps").read_text()
    assert "onnxruntime" in maps and "libtorch" not in maps and "libc10" not in maps


def embed_through_balancer(system) -> dict:
    samples, rate = read_wav(DATA / "gb_male_16k.wav")
    reply = call(f"{system.url}/embed", "POST", encode_wav(samples[:3 * rate], rate))
    assert reply.status == 200, reply.body
    return reply.body


@pytest.mark.integration
def test_ge2e_worker_serves_without_torch_under_600_mb(tmp_path, ge2e_graph, ge2e_models):
    system = make_system(tmp_path, n_workers=1, worker_args=[
        "--encoder", "ge2e", "--model-dir", str(ge2e_models), "--store", str(tmp_path / "voiceprints.db"),
        "--activity-log", str(tmp_path / "activity.log")])
    try:
        system.start()
        [status] = wait_encoders(system)
        assert status["state"] == "ready" and status["exported_at_start"] is False, status
        embedding = embed_through_balancer(system)
        assert embedding["encoder"] == "ge2e" and embedding["model"] == ge2e_graph.model
        assert_no_torch(system, 0)
        assert serving_process(system, 0).memory_info().rss < 600 << 20
    finally:
        system.stop()


@pytest.mark.integration
def test_three_ecapa_workers_start_together_export_once_and_serve_without_torch(tiny_ecapa, tmp_path):
    system = make_system(tmp_path, n_workers=3, env={"HF_HUB_OFFLINE": "1"}, worker_args=[
        "--encoder", "ecapa", "--ecapa-source", str(tiny_ecapa), "--model-dir", str(tmp_path / "models"),
        "--store", str(tmp_path / "voiceprints.db"), "--activity-log", str(tmp_path / "activity.log")])
    try:
        system.start()
        statuses = wait_encoders(system)
        assert all(s["state"] == "ready" for s in statuses), statuses
        assert sorted(s["exported_at_start"] for s in statuses) == [False, False, True]
        assert len({s["graph"] for s in statuses}) == 1
        assert {s["model"] for s in statuses} == {fingerprint(tiny_ecapa / "embedding_model.ckpt")}
        assert embed_through_balancer(system)["dim"] == EMBEDDING_DIM
        for i in range(3):
            assert_no_torch(system, i)
    finally:
        system.stop()
