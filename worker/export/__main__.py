"""Export a speaker encoder to ONNX, so workers can serve it without torch.

    python -m worker.export --encoder ge2e --model-dir models
    python -m worker.export --encoder ecapa --source speechbrain/spkrec-ecapa-voxceleb --model-dir models
    python -m worker.export --encoder ecapa --source /models/spkrec-ecapa-voxceleb --out /tmp/graphs

Needs the export tools (pip install '.[export]': torch, SpeechBrain,
resemblyzer, onnx). The graph goes to ``--out`` (default
``<model-dir>/onnx``) under the name the worker looks for. A worker with the
export tools runs this as a subprocess when the graph it needs is missing; a
runtime-only worker serves a graph made here and copied to its
``<model-dir>/onnx/``.

The last line on stdout is JSON: {"path", "encoder", "model", "dim",
"exported", "seconds"}, or {"error"} with exit status 1. Everything else
(torch's progress lines included) goes to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from ..speakers.graphs import graph_dir
from .onnx_export import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worker.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", choices=("ecapa", "ge2e"), required=True)
    p.add_argument("--source", default="speechbrain/spkrec-ecapa-voxceleb",
                   help="ECAPA: hub id or local model directory (as the worker's --ecapa-source)")
    p.add_argument("--model-dir", type=Path, default=Path("models"),
                   help="where from_hparams collects hub models (as the worker's --model-dir)")
    p.add_argument("--out", type=Path, help="where the graph is written (default: <model-dir>/onnx)")
    a = p.parse_args(argv)
    out = a.out or graph_dir(a.model_dir)
    # torch.onnx prints its progress on stdout; stdout's last line is ours.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(a.encoder, a.source, a.model_dir, out)
    print(json.dumps(result), flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
