#!/usr/bin/env bash
# Lint and type checks (config in pyproject.toml): ruff on everything,
# mypy on the served packages and the tools (voicetools/). .ci/run runs this
# before the tests.
#   scripts/check.sh            check
#   scripts/check.sh --fix      let ruff fix what it can first
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/ensure_venv.sh
if [[ "${1:-}" == "--fix" ]]; then
    .venv/bin/ruff check --fix .
fi
.venv/bin/ruff check .
.venv/bin/mypy
