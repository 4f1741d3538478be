"""A runtime-only worker (no torch, resemblyzer or SpeechBrain: the export tools
uninstalled, in a fresh interpreter): without a graph its speaker calls say
which command makes one and where it goes; with a GE2E graph copied from a
machine that has the tools, it finds the graph by its metadata and serves it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from speaker_helpers import EXPORT_TOOLS, ge2e_graph, uninstalled
from voicetools.paths import REPO
from worker.speakers.encoders import fingerprint, ge2e_weights_path

SPEECH = REPO / "data" / "us_female_16k.wav"


def runtime_worker(root: Path, encoder: str, model_dir: Path) -> dict[str, Any]:
    """Start a worker app with the export tools uninstalled, wait for its
    encoder, POST a recording to /embed: what happened."""
    code = uninstalled(*EXPORT_TOOLS) + (
        "import json\n"
        "from worker.app import create_app\n"
        "from worker.config import WorkerConfig\n"
        f"root = {str(root)!r}\n"
        f"app = create_app(WorkerConfig(encoder={encoder!r}, model_dir={str(model_dir)!r}, log_dir=root + '/logs',\n"
        "                              store_path=root + '/vp.db', activity_log=root + '/activity.log'))\n"
        "engine = app.extensions['voice_worker'].speakers.engine\n"
        "assert engine.wait_loaded(300)\n"
        "client = app.test_client()\n"
        f"reply = client.post('/embed', data=open({str(SPEECH)!r}, 'rb').read())\n"
        "print(json.dumps({'status': reply.status_code, 'body': reply.get_json(),\n"
        "                  'speakers': client.get('/health').get_json()['speakers'],\n"
        "                  'loaded': sorted(m for m in sys.modules if m.partition('.')[0] in HIDDEN)}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_a_graph_speaker_calls_name_the_command_that_makes_it(tmp_path: Path) -> None:
    models = tmp_path / "models"
    result = runtime_worker(tmp_path, "ge2e", models)
    directory = models.resolve() / "onnx"
    assert result["status"] == 503 and result["speakers"]["state"] == "unavailable"
    assert result["body"]["error"] == (
        f"speaker encoder unavailable: no ONNX graph for ge2e in {directory} and this worker cannot make one "
        "(the export tools are not installed: torch, resemblyzer). On a machine with the export tools "
        "(pip install '.[export]'), run: python -m worker.export --encoder ge2e --model-dir models, "
        f"then copy models/onnx/ge2e-*.onnx to {directory}/ on this worker.")
    assert result["loaded"] == []


def test_an_ecapa_worker_without_a_graph_names_its_source_in_the_command(tmp_path: Path) -> None:
    result = runtime_worker(tmp_path, "ecapa", tmp_path / "models")
    assert result["status"] == 503
    error = result["body"]["error"]
    assert "the export tools are not installed: torch, speechbrain" in error
    assert "python -m worker.export --encoder ecapa --source speechbrain/spkrec-ecapa-voxceleb" in error


def test_a_copied_ge2e_graph_is_found_by_its_metadata_and_served(tmp_path: Path) -> None:
    graph = ge2e_graph()  # made here, where the export tools are installed
    weights = ge2e_weights_path()
    assert weights is not None
    models = tmp_path / "models"
    (models / "onnx").mkdir(parents=True)
    # The name does not matter: without resemblyzer the weights cannot be
    # fingerprinted to find it, only the metadata can.
    shutil.copy(graph, models / "onnx" / "ge2e-copied-from-the-build-machine.onnx")
    result = runtime_worker(tmp_path, "ge2e", models)
    assert result["status"] == 200, result
    assert result["body"]["encoder"] == "ge2e" and result["body"]["model"] == fingerprint(weights)
    assert len(result["body"]["embedding"]) == 256
    speakers = result["speakers"]
    assert speakers["state"] == "ready" and speakers["found_by"] == "metadata"
    assert speakers["graph"] == "ge2e-copied-from-the-build-machine.onnx" and speakers["runtime"] == "onnxruntime"
    assert result["loaded"] == []
