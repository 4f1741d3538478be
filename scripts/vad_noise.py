#!/usr/bin/env python3
"""VAD in noise: raw silero, WebRTC VAD and the worker's decisions, frame F1
on speech mixed with white and babble noise at 8 and 16 kHz.

    .venv/bin/python scripts/vad_noise.py                 # the full table (docs/vad.md)
    .venv/bin/python scripts/vad_noise.py --seconds 10 --rates 8000 --json out.json

The command only; the benchmark is the package scripts/vadbench/.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make worker importable (scripts/ is sys.path[0])
    sys.path.insert(1, str(REPO))

from vadbench.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
