"""Where the tools look by default: the checkout they are installed from.

The tools are installed editable from a checkout (scripts/ensure_venv.sh
runs ``pip install -e .``), so this file is <checkout>/voicetools/paths.py
whether a tool runs as a console command or as ``python -m``: REPO is that
checkout, its data/ holds the small samples, and the real recordings are in
../shared/data beside it. Each tool that reads them has a flag to look
elsewhere (--speech-dir, --data, a folder argument, ...); an install that is
not editable has no checkout here, and needs those flags.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"                   # the samples in the repository: data/*.wav, chunks_*, enroll/, cohort/
MODELS = REPO / "models"               # the workers' default --model-dir when they run in the checkout
RESULTS = REPO / "bench-results"       # benchmark output (gitignored)
SHARED_DATA = REPO.parent / "shared" / "data"  # real recordings, beside the checkout (never committed)
SPEECH = SHARED_DATA / "speech"
SPEAKERS = SHARED_DATA / "speakers"
