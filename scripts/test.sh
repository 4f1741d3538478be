#!/usr/bin/env bash
# Run the test suite: make .venv match requirements.txt, then pytest.
# Arguments go to pytest, e.g. scripts/test.sh -k replay -x
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/ensure_venv.sh
exec .venv/bin/python -m pytest -q tests "$@"
