"""Loading the configured speaker encoder as an ONNX graph (graphs.py).

The graph is found in ``<model-dir>/onnx/``: by the fingerprint of the weights
when they are on this machine, else by the graph's metadata. When it is not
there, a machine with the export tools (torch, resemblyzer or SpeechBrain)
makes it by running ``python -m worker.export`` in a subprocess:
torch lives and dies there, never in the worker. A runtime-only install has no
export tools; its speaker calls then say which command makes the graph, where.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from .encoders import DISABLED_REASON, Encoder, Unavailable, ecapa_local_source, unavailable_reason
from .graphs import GRAPHS, graph_by_metadata, graph_dir, graph_key, open_graph

log = logging.getLogger("worker.speakers")

# A hub download of ECAPA (80 MB) plus the export fits easily.
EXPORT_TIMEOUT_SECONDS = 1800
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where `python -m worker...` resolves
EXPORT_MODULE = "worker.export"
# What the export of each encoder imports (pyproject.toml's "export" extra).
EXPORT_TOOLS = {"ge2e": ("torch", "resemblyzer", "onnx", "onnxscript"),
                "ecapa": ("torch", "speechbrain", "onnx", "onnxscript")}


def missing_export_tools(kind: str) -> list[str]:
    """The export tools of kind this machine lacks, found without importing them."""
    return [name for name in EXPORT_TOOLS[kind] if importlib.util.find_spec(name) is None]


def export_command(kind: str, source: str) -> str:
    command = f"python -m {EXPORT_MODULE} --encoder {kind}"
    return command + (f" --source {source}" if kind == "ecapa" else "")


def no_graph_reason(kind: str, source: str, directory: Path, missing: list[str]) -> str:
    """Why a worker without the export tools has no encoder, and the command
    that gives it one (on another machine)."""
    return (f"no ONNX graph for {kind} in {directory} and this worker cannot make one (the export tools are not "
            f"installed: {', '.join(missing)}). On a machine with the export tools (pip install '.[export]'), run: "
            f"{export_command(kind, source)} --model-dir models, then copy models/onnx/{kind}-*.onnx to "
            f"{directory}/ on this worker.")


def run_export(kind: str, source: str, model_dir: Path) -> dict:
    """python -m worker.export in a subprocess: its JSON result."""
    # --opt=value: a source starting with "-" stays a value.
    command = [sys.executable, "-m", EXPORT_MODULE, f"--encoder={kind}", f"--source={source}",
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
    not cached and this machine can; or why it cannot be had. Never raises."""
    if kind not in GRAPHS:
        return Unavailable(kind, DISABLED_REASON)
    model_dir = Path(model_dir).resolve()
    directory = graph_dir(model_dir)
    source = ecapa_source
    try:
        if kind == "ecapa":
            local = ecapa_local_source(ecapa_source)
            # The subprocess runs elsewhere: a relative directory would not be found.
            source = str(local) if local is not None else ecapa_source
        key = graph_key(kind, source, model_dir)
    except Exception as exc:  # a source that cannot hold a model, a broken install
        return Unavailable(kind, unavailable_reason(kind, ecapa_source, exc))
    unreadable: Path | None = None
    if key is None:
        found = graph_by_metadata(kind, source, directory)
        if found is not None:
            log.warning("the %s weights are not on this machine: serving %s, the newest graph in %s whose "
                        "metadata says %s (model %s)", kind, found.info["graph"], directory, kind, found.model)
            return found
    elif (directory / key.filename).is_file():
        try:
            return open_graph(directory / key.filename)
        except Exception:
            # Unreadable (a disk that lost it, an older format): export anew.
            log.exception("cached graph %s unreadable", directory / key.filename)
            unreadable = directory / key.filename
    missing = missing_export_tools(kind)
    if missing:
        reason = no_graph_reason(kind, source, directory, missing)
        if unreadable is not None:
            reason = f"the cached graph {unreadable} cannot be opened (see the worker's log); {reason}"
        return Unavailable(kind, reason)
    if unreadable is not None:
        unreadable.unlink(missing_ok=True)
    log.info("exporting speaker encoder %s to ONNX under %s", kind, directory)
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
