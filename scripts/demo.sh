#!/usr/bin/env bash
# The whole system on one machine, in one command, showing who speaks:
#   1. .venv with requirements.txt and the project installed editable, its
#      tools as .venv/bin/voicestream-* (installed only when missing or changed);
#      .env read as honcho reads it, so the demo and the servers agree,
#   2. every data/*.wav split into 100 ms frames (data/chunks_<name>/),
#   3. the speaker encoder chosen and said: the workers' default, ECAPA, when
#      its model is on this machine, else GE2E (its weights ship with
#      resemblyzer), set explicitly with SPEAKER_ENCODER - never a silent fallback,
#   4. balancer + three workers started with honcho (Procfile); the demo
#      waits for every worker and for their speaker encoders,
#   5. each speaker of data/enroll/<speaker>.wav enrolled in each demo account
#      through the balancer's REST API,
#   6. every data/chunks_* streamed concurrently at real-time pace, one account each,
#   7. per account: the first log line of each speaker segment, frames per
#      speaker (final and immediate labels), a strip of frames and a timeline
#      PNG (voicestream-timeline);
#      then the system is stopped.
#
# Accounts: one per streamed sample, named after it (us_female_16k, call_16k,
# ...), as voicestream-replay names them: two streams on one account would share its
# VAD and speaker state. Each account has its own voiceprints, so every
# account gets all the demo speakers enrolled, and the worker must tell which
# of them talks, not only that someone it knows does. The demo first deletes
# the voiceprints of these accounts, so a rerun (or another encoder) starts
# from the same state.
#
# Environment: SPEAKER_ENCODER (ecapa, ge2e or none: the workers use it and the
# demo does not choose), DEMO_READY_TIMEOUT (seconds to wait for the workers,
# default 120), DEMO_ENCODER_TIMEOUT (seconds to wait for their speaker
# encoders, default 600: a first start exports the ONNX graph, about 30 s for
# GE2E, longer with an ECAPA download), DEMO_TAIL_LINES (default 8), LOG_DIR
# (default logs), REPLAY_* (see voicestream-replay --help), AUTH_TOKEN (passed
# to the balancer, the REST calls and the replay), ECAPA_SOURCE and MODEL_DIR
# (where the workers look for ECAPA, see docs/configuration.md).
set -euo pipefail

cd "$(dirname "$0")/.."
python=.venv/bin/python

step() { printf '\n==> %s\n' "$*"; }

step "Python environment"
scripts/ensure_venv.sh
echo ".venv is up to date with requirements.txt and pyproject.toml"

# honcho starts the Procfile's processes with the environment updated by .env
# (its values win). Read it the same way, with honcho's parser, so that
# LOG_DIR, AUTH_TOKEN, SPEAKER_ENCODER... mean the same to the demo.
if [[ -f .env ]]; then
    dotenv="$("$python" - <<'EOF'
import re
import shlex
from pathlib import Path

from honcho.environ import parse

for key, value in parse(Path(".env").read_text()).items():
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        print(f"export {key}={shlex.quote(value)}")
EOF
)"
    eval "$dotenv"
    echo "read .env (honcho passes it to the servers too): $(sed -n 's/^export \([^=]*\)=.*/\1/p' <<<"$dotenv" | paste -sd' ')"
fi

ready_timeout="${DEMO_READY_TIMEOUT:-120}"
encoder_timeout="${DEMO_ENCODER_TIMEOUT:-600}"
tail_lines="${DEMO_TAIL_LINES:-8}"
log_dir="${LOG_DIR:-logs}"
balancer_url="http://127.0.0.1:6001"

step "Splitting data/*.wav into 100 ms frames"
.venv/bin/voicestream-split --frame-ms 100 --no-progress

step "Speaker encoder"
if [[ -n "${SPEAKER_ENCODER:-}" ]]; then
    echo "SPEAKER_ENCODER=$SPEAKER_ENCODER is set: the workers use it"
# The check looks only where a worker finds ECAPA without the network (its
# own loader's functions, the workers' settings): a cached graph, or the
# model's files (a local --ecapa-source, or an earlier download). It never
# downloads: a hub download is the workers' business, on request.
elif found="$("$python" - <<'EOF'
import sys
from pathlib import Path

from worker.config import parse_args
from worker.speakers.encoders import ecapa_local_source, ecapa_savedir
from worker.speakers.graphs import ecapa_files, graph_by_metadata, graph_dir

config = parse_args([])  # defaults and environment, as the workers read them
source, model_dir = config.ecapa_source, Path(config.model_dir)
try:
    local = ecapa_local_source(source)
    weights = ecapa_files(source, model_dir)
except (OSError, ValueError) as exc:
    print(f"ECAPA_SOURCE={source} cannot hold the model: {exc}")
    sys.exit(1)
if weights is not None:
    print(f"its files are in {weights}")
    sys.exit(0)
# The loader compares a local source by its absolute path.
graph = graph_by_metadata("ecapa", str(local) if local else source, graph_dir(model_dir.resolve()))
if graph is not None:
    print(f"graph {graph_dir(model_dir) / graph.info['graph']}")
    sys.exit(0)
if local is None:  # a hub id: the export finds the files in the Hugging Face cache without the network
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        pass
    else:
        cached = [try_to_load_from_cache(source, name) for name in ("hyperparams.yaml", "embedding_model.ckpt")]
        if all(isinstance(path, str) for path in cached):
            print(f"its files are in the Hugging Face cache, {Path(cached[0]).parent}")
            sys.exit(0)
print(f"no ECAPA graph in {graph_dir(model_dir)}/, no model files in {ecapa_savedir(source, model_dir)}/ "
      f"nor in the Hugging Face cache; the workers would have to download {source}")
sys.exit(1)
EOF
)"; then
    echo "ECAPA model available offline ($found): the workers use their default, SPEAKER_ENCODER=ecapa"
    export SPEAKER_ENCODER=ecapa
else
    echo "ECAPA model not available offline ($found): this demo runs with SPEAKER_ENCODER=ge2e"
    echo "(GE2E's weights ship with resemblyzer. For ECAPA: SPEAKER_ENCODER=ecapa scripts/demo.sh where"
    echo " huggingface.co is reachable, or ECAPA_SOURCE=DIR with the model's files; see docs/speakers.md)"
    export SPEAKER_ENCODER=ge2e
fi

ports=(6001 7001 7002 7003)  # as in the Procfile: the balancer, then the workers
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

step "Starting balancer and workers (honcho start, SPEAKER_ENCODER=$SPEAKER_ENCODER; output in $honcho_log)"
.venv/bin/honcho start >"$honcho_log" 2>&1 &
honcho_pid=$!

echo "waiting up to ${ready_timeout}s for $balancer_url/health to report every worker up ..."
if ! "$python" - "$balancer_url/health" "$ready_timeout" "$honcho_pid" <<'EOF'
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

# A worker answers /health while its encoder still loads (speaker calls get
# 503 "loading" meanwhile): wait for speakers.state on every worker. Progress
# goes to stderr; stdout is the threshold the workers decide with.
echo "waiting up to ${encoder_timeout}s for the workers' speaker encoders ($SPEAKER_ENCODER) ..."
speakers=1
threshold=""
if ! threshold="$("$python" - "$encoder_timeout" "$honcho_pid" "${ports[@]:1}" <<'EOF'
import json, os, sys, time, urllib.request

timeout, honcho_pid, ports = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
deadline = time.monotonic() + timeout
states: dict[str, dict] = {}
while time.monotonic() < deadline:
    try:
        os.kill(honcho_pid, 0)
    except ProcessLookupError:
        sys.exit("honcho exited while the speaker encoders were loading")
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                states[port] = json.load(resp).get("speakers", {})
        except (OSError, ValueError):
            states[port] = {"state": "not answering"}
    if all(s.get("state") not in ("loading", "not answering") for s in states.values()):
        break
    time.sleep(0.5)
for port, s in states.items():
    detail = s.get("graph") or s.get("reason") or ""
    print(f"worker {port}: {s.get('encoder', '?')} {s.get('state')}" + (f" ({detail})" if detail else ""),
          file=sys.stderr)
if not all(s.get("state") == "ready" for s in states.values()):
    sys.exit(1)
print(min(s["threshold"] for s in states.values()))
EOF
)"; then
    speakers=0
    echo "demo.sh: the workers have no usable speaker encoder (see above): streaming with VAD only," \
         "log lines will carry no speaker=" >&2
fi

# One account per data/*.wav (not per data/chunks_* directory: one left from
# a sample since removed is not streamed), named as voicestream-replay would derive it;
# passed explicitly so the log files shown below are certainly the replayed ones.
dirs=()
accounts=()
for wav in data/*.wav; do
    name="$(basename "$wav" .wav)"
    dirs+=("data/chunks_$name")
    accounts+=("$(printf '%s' "$name" | tr -c 'A-Za-z0-9_-' '_' | cut -c1-64)")
done

if ((speakers)); then
    step "Enrolling data/enroll/*.wav in each of the ${#accounts[@]} accounts (REST API of the balancer)"
    "$python" - "$balancer_url" "${#accounts[@]}" "${accounts[@]}" data/enroll/*.wav <<'EOF'
import json, os, sys, urllib.error, urllib.request
from pathlib import Path

url, count = sys.argv[1], int(sys.argv[2])
accounts, wavs = sys.argv[3:3 + count], [Path(p) for p in sys.argv[3 + count:]]
headers = {"Authorization": f"Bearer {os.environ['AUTH_TOKEN']}"} if os.environ.get("AUTH_TOKEN") else {}


def call(method: str, path: str, body: bytes | None = None) -> dict:
    request = urllib.request.Request(url + path, data=body, method=method,
                                     headers={**headers, "Content-Type": "audio/wav"} if body else headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        sys.exit(f"demo.sh: {method} {path}: {exc.code} {json.load(exc).get('error', '')}")


print("speakers: " + ", ".join(f"{w.stem} ({w})" for w in wavs))
for account in accounts:
    call("DELETE", f"/accounts/{account}/speakers")  # a rerun starts from the same state
    enrolled = [call("POST", f"/accounts/{account}/speakers/{w.stem}", w.read_bytes()) for w in wavs]
    print(f"{account}: " + ", ".join(f"{e['name']} ({e['sample_speech_seconds']:.1f} s of speech, {e['ms']:.0f} ms)"
                                      for e in enrolled))
EOF
fi

declare -A lines_before=()
for account in "${accounts[@]}"; do
    lines_before[$account]=$( [[ -f "$log_dir/$account.txt" ]] && wc -l <"$log_dir/$account.txt" || echo 0)
done

step "Streaming ${#dirs[@]} accounts at real-time pace"
replay_status=0
.venv/bin/voicestream-replay "${dirs[@]}" --accounts "$(IFS=,; echo "${accounts[*]}")" \
    --pace realtime --json-out "$log_dir/demo-replay.json" || replay_status=$?

for account in "${accounts[@]}"; do
    file="$log_dir/$account.txt"
    if [[ ! -f "$file" ]]; then
        step "$file: missing (no frame of $account was logged)"
        continue
    fi
    total=$(wc -l <"$file")
    new_lines=$((total - lines_before[$account]))
    # The first line of each speaker segment (a speaker= unlike the line
    # before's): who spoke when, in a few lines. Without any, the last lines.
    shown=$(tail -n "$new_lines" "$file" | awk '
        { s = match($0, /, speaker=[^,]*/) ? substr($0, RSTART, RLENGTH) : "" }
        s != "" && s != prev { print }
        { prev = s }' | tail -n "$tail_lines")
    if [[ -n "$shown" ]]; then
        step "$file: $new_lines lines written in this run; the first line of each speaker segment (last $tail_lines):"
        printf '%s\n' "$shown"
    else
        step "$file: $new_lines lines written in this run, last $tail_lines:"
        tail -n "$tail_lines" "$file"
    fi
    # Frames per speaker, final and immediate labels, one character per frame
    # (the pauses between sentences show as gaps) and the PNG:
    # voicestream-timeline reads this run's frame lines and, of the account's
    # segments file, the final segments of those frames.
    tail -n "$new_lines" "$file" | .venv/bin/voicestream-timeline "$account" --log - --summary \
        --segments "$log_dir/$account.segments.txt" --out "$log_dir/$account.png" ${threshold:+--threshold "$threshold"}
done

if [[ $replay_status -ne 0 ]]; then
    echo "demo.sh: the replay reported missing or failed replies (exit $replay_status); see above and $honcho_log" >&2
    exit "$replay_status"
fi
step "Demo finished in ${SECONDS} s: every frame was answered$( ((speakers)) && echo ", speakers by name above")"
