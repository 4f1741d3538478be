#!/usr/bin/env bash
# Make .venv match requirements.txt and pyproject.toml: create it when
# missing, then run `pip install -r requirements.txt` and install the project
# itself editable (`pip install --no-deps -e .`: balancer, worker, voicestream
# and the tools' package voicetools import from this checkout, and the
# voicestream-* commands land in .venv/bin) when requirements.txt,
# pyproject.toml (its packages, entry points) or the Python that made the venv
# changed since the last successful install. A hash stamp in .venv records
# that install; without the stamp pip runs once (quick when everything is
# already satisfied) and writes it.
#
# The first install downloads torch with its CUDA wheels, about 4.5 GB.
set -euo pipefail

cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
stamp=.venv/.requirements.stamp

if [[ ! -x .venv/bin/python ]]; then
    if ! command -v "$python" >/dev/null; then
        echo "ensure_venv.sh: $python not found: install Python 3.11+ or set PYTHON=/path/to/python3" >&2
        exit 1
    fi
    echo "ensure_venv.sh: creating .venv with $("$python" --version 2>&1)"
    if ! "$python" -m venv .venv; then
        echo "ensure_venv.sh: '$python -m venv .venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
        rm -rf .venv
        exit 1
    fi
fi

want="$( (sha256sum requirements.txt pyproject.toml; .venv/bin/python -c 'import sys; print(sys.version)') \
         | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi

echo "ensure_venv.sh: installing requirements.txt and the project (editable) into .venv" \
     "(the first time this downloads about 4.5 GB for torch)"
pip_flags=(--disable-pip-version-check --no-input)
if [[ -n "${CI:-}" || ! -t 1 ]]; then
    pip_flags+=(--progress-bar off)
fi
rm -f "$stamp"
if ! .venv/bin/python -m pip install "${pip_flags[@]}" -r requirements.txt; then
    echo "ensure_venv.sh: ERROR: 'pip install -r requirements.txt' failed (see pip's output above); .venv is incomplete" >&2
    exit 1
fi
# --no-deps: requirements.txt pinned them all just now; this only links the
# checkout's packages and writes the console scripts.
if ! .venv/bin/python -m pip install "${pip_flags[@]}" --no-deps -e .; then
    echo "ensure_venv.sh: ERROR: 'pip install --no-deps -e .' failed (see pip's output above); the tools are not installed" >&2
    exit 1
fi
echo "$want" > "$stamp"
echo "ensure_venv.sh: .venv is up to date"
