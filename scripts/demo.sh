#!/usr/bin/env bash
# The whole system on one machine, in one command:
#   1. .venv with requirements.txt (installed only when missing or changed),
#   2. every data/*.wav split into 100 ms frames (data/chunks_<name>/),
#   3. balancer + three workers started with honcho (Procfile),
#   4. every data/chunks_* streamed concurrently at real-time pace, one account each,
#   5. the tail of each account's frame log, then the system is stopped.
#
# Environment: DEMO_READY_TIMEOUT (seconds to wait for the workers, default 120),
# DEMO_TAIL_LINES (default 8), LOG_DIR (default logs), REPLAY_* (see
# scripts/replay.py --help), AUTH_TOKEN (passed to the balancer and the replay).
set -euo pipefail

cd "$(dirname "$0")/.."
ready_timeout="${DEMO_READY_TIMEOUT:-120}"
tail_lines="${DEMO_TAIL_LINES:-8}"
log_dir="${LOG_DIR:-logs}"
health_url="http://127.0.0.1:6001/health"
python=.venv/bin/python

step() { printf '\n==> %s\n' "$*"; }

step "Python environment"
scripts/ensure_venv.sh
echo ".venv is up to date with requirements.txt"

step "Splitting data/*.wav into 100 ms frames"
"$python" scripts/split.py --frame-ms 100 --no-progress

ports=(6001 7001 7002 7003)  # as in the Procfile
listening() {
    local port
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
    done
    return 1
}

# A system already on these ports would either make honcho fail or, worse,
# answer the replay with code that is not this checkout's.
if listening "${ports[@]}"; then
    echo "demo.sh: one of ports ${ports[*]} is already in use; stop whatever runs there first (the demo starts its own balancer and workers)" >&2
    exit 1
fi

mkdir -p "$log_dir"
honcho_log="$log_dir/demo-honcho.log"
honcho_pid=""

stop_system() {
    local status=$?
    if [[ -n "$honcho_pid" ]] && kill -0 "$honcho_pid" 2>/dev/null; then
        step "Stopping the system"
        kill -TERM "$honcho_pid" 2>/dev/null || true
        # honcho passes SIGTERM to every process and waits for them to finish
        # their in-flight frames; it is killed only if that hangs.
        for _ in $(seq 1 150); do
            kill -0 "$honcho_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$honcho_pid" 2>/dev/null; then
            echo "honcho did not stop within 15 s; killing it" >&2
            kill -KILL "$honcho_pid" 2>/dev/null || true
        fi
        wait "$honcho_pid" 2>/dev/null || true
        # honcho runs each Procfile line under `sh -c`, so it can return while
        # the servers themselves are still finishing: wait for their ports.
        for _ in $(seq 1 150); do
            listening "${ports[@]}" || break
            sleep 0.1
        done
        if listening "${ports[@]}"; then
            echo "demo.sh: a server still listens on one of ports ${ports[*]} after 15 s" >&2
        else
            echo "system stopped (its output: $honcho_log)"
        fi
    fi
    exit "$status"
}
trap stop_system EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "Starting balancer and workers (honcho start; output in $honcho_log)"
.venv/bin/honcho start >"$honcho_log" 2>&1 &
honcho_pid=$!

echo "waiting up to ${ready_timeout}s for $health_url to report every worker up ..."
if ! "$python" - "$health_url" "$ready_timeout" "$honcho_pid" <<'EOF'
import json, os, sys, time, urllib.error, urllib.request

url, timeout, honcho_pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + timeout
last = "no answer yet"
while time.monotonic() < deadline:
    try:
        os.kill(honcho_pid, 0)
    except ProcessLookupError:
        sys.exit("honcho exited before the system was ready")
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:  # 503 while some worker is down
        body = json.load(exc)
    except (OSError, ValueError) as exc:
        body, last = None, f"balancer not answering ({exc.__class__.__name__})"
    if body is not None:
        workers = body.get("workers", {})
        if workers and all(state == "up" for state in workers.values()):
            print("all workers up: " + ", ".join(workers))
            sys.exit(0)
        last = "workers: " + ", ".join(f"{w} {s}" for w, s in workers.items())
    time.sleep(0.5)
sys.exit(f"the system was not ready after {timeout:g} s; last seen: {last}")
EOF
then
    echo "demo.sh: the system did not come up; last lines of $honcho_log:" >&2
    tail -n 30 "$honcho_log" >&2
    exit 1
fi

# One account per frame directory, named as replay.py would derive it; passed
# explicitly so the log files shown below are certainly the replayed ones.
dirs=()
accounts=()
for dir in data/chunks_*/; do
    dir="${dir%/}"
    dirs+=("$dir")
    name="${dir##*/}"
    name="${name#chunks_}"
    accounts+=("$(printf '%s' "$name" | tr -c 'A-Za-z0-9_-' '_' | cut -c1-64)")
done
declare -A lines_before=()
for account in "${accounts[@]}"; do
    lines_before[$account]=$( [[ -f "$log_dir/$account.txt" ]] && wc -l <"$log_dir/$account.txt" || echo 0)
done

step "Streaming ${#dirs[@]} accounts at real-time pace"
replay_status=0
"$python" scripts/replay.py "${dirs[@]}" --accounts "$(IFS=,; echo "${accounts[*]}")" \
    --pace realtime --json-out "$log_dir/demo-replay.json" || replay_status=$?

for account in "${accounts[@]}"; do
    file="$log_dir/$account.txt"
    if [[ ! -f "$file" ]]; then
        step "$file: missing (no frame of $account was logged)"
        continue
    fi
    total=$(wc -l <"$file")
    new_lines=$((total - lines_before[$account]))
    step "$file: $new_lines lines written in this run, last $tail_lines:"
    tail -n "$tail_lines" "$file"
    # One character per frame of this run: the pauses between sentences show as gaps.
    printf 'voice by frame (#=voice, .=silence):\n'
    # (voicestream.logline reads the lines: the project's one log-line parser)
    tail -n "$new_lines" "$file" | "$python" -c 'import sys; from voicestream.logline import parse_line
print("".join(".#"[line.voice] for line in map(parse_line, sys.stdin) if line))' | fold -w 100
    echo
done

if [[ $replay_status -ne 0 ]]; then
    echo "demo.sh: the replay reported missing or failed replies (exit $replay_status); see above and $honcho_log" >&2
    exit "$replay_status"
fi
step "Demo finished: every frame was answered"
