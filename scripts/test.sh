#!/usr/bin/env bash
# Run the test suite: make .venv match requirements.txt, then pytest.
# Arguments go to pytest, e.g. scripts/test.sh -k replay -x
# In-process tests only (no servers, no browser): scripts/test.sh -m 'not integration'
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/ensure_venv.sh
exec .venv/bin/python -m pytest -q --durations=10 "$@"
