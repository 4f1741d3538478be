#!/usr/bin/env bash
# Run the test suite, as CI does (.ci/run ends here): install the system
# packages the tests drive (as root; otherwise print the command that does,
# scripts/system_packages.sh), make .venv match requirements.txt, then pytest.
# Its last lines say how many tests were skipped and why (tests/skip_summary.py).
# Arguments go to pytest, e.g. scripts/test.sh -k replay -x
# In-process tests only (no servers, no browser): scripts/test.sh -m 'not integration'
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/system_packages.sh
scripts/ensure_venv.sh
exec .venv/bin/python -m pytest -q --durations=10 "$@"
