#!/usr/bin/env python3
"""Load benchmark: how many live streams one machine holds.

    .venv/bin/python scripts/bench.py --mode vad --streams 10,50,100 --seconds 20
    .venv/bin/python scripts/bench.py --help

The command only; the benchmark is the package scripts/benchmark/ (its
docstring, shown by --help, says what is measured and how).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make voicestream importable (scripts/ is sys.path[0])
    sys.path.insert(1, str(REPO))

from benchmark.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
