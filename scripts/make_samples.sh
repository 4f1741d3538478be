#!/usr/bin/env bash
# Regenerate the project's own sample WAVs in data/ with espeak-ng and sox.
#
# The WAVs are committed, so this is only needed to change them:
#   apt-get install -y espeak-ng sox && scripts/make_samples.sh
#
# Each sample is synthesized speech with one second of silence between
# sentences (so VAD has voice on/off transitions to find), mono PCM 16,
# at 8 kHz (telephony) or 16 kHz. Output is deterministic: espeak-ng is, and
# sox runs in repeatable mode (-R) without dither (-D), so the pauses are
# digital silence and a rerun gives byte-identical files.
set -euo pipefail

cd "$(dirname "$0")/.."
out_dir="${SAMPLES_DIR:-data}"

for tool in espeak-ng sox; do
    if ! command -v "$tool" >/dev/null; then
        echo "make_samples.sh: $tool is not installed: apt-get install -y espeak-ng sox" >&2
        exit 1
    fi
done

mkdir -p "$out_dir"
tmp_dir="$(mktemp -d)"
trap 'rm -rf "$tmp_dir"' EXIT

pause='<break time="1000ms"/>'

# make_sample NAME VOICE RATE SENTENCE...
make_sample() {
    local name="$1" voice="$2" rate="$3"
    shift 3
    local ssml="<speak>" sentence
    for sentence in "$@"; do
        ssml+="${sentence}${pause}"
    done
    ssml+="</speak>"
    espeak-ng -m -v "$voice" -s 155 -w "$tmp_dir/$name.wav" "$ssml"
    # Half a second of silence before the first word, like a call picking up;
    # the trailing break already ends the file with a pause.
    sox -R -D "$tmp_dir/$name.wav" -r "$rate" -c 1 -b 16 -e signed-integer \
        "$out_dir/$name.wav" pad 0.5 0
    printf '%-24s %s\n' "$out_dir/$name.wav" "$(soxi -d "$out_dir/$name.wav") s, $(soxi -r "$out_dir/$name.wav") Hz"
}

make_sample us_male_8k en-us 8000 \
    "Hello, this is a test call to the voice stream service." \
    "Every frame lasts one hundred milliseconds." \
    "The worker decides whether each frame holds speech."

make_sample us_female_16k en-us+f3 16000 \
    "Good morning. I would like to check the balance on my account." \
    "The number is one two three four." \
    "Thank you, that is all for today."

make_sample gb_male_16k en-gb+m3 16000 \
    "The balancer sends every account to the same worker." \
    "When a worker goes down, its accounts move to the next one." \
    "Silence between sentences turns the voice flag off."
