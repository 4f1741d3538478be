#!/usr/bin/env bash
# Regenerate the project's own sample WAVs in data/ with espeak-ng and sox.
#
# The WAVs are committed, so this is only needed to change them:
#   apt-get install -y espeak-ng sox && scripts/make_samples.sh
#
# Four synthetic speakers, each an espeak-ng voice:
#   us_male    en-us               (telephony: 8 kHz)
#   us_female  en-us+f3
#   gb_male    en-gb+m3
#   sc_female  en-gb-scotland+f2
# Each has an enrollment sample, data/enroll/<speaker>.wav (9-11 s of
# speech; the speaker's name is the file's), and is heard in one or two
# streamed samples, data/*.wav, that say other sentences: enrollment and
# streamed audio never share a recording. data/call_16k.wav is a phone call in
# which gb_male and us_female take turns. scripts/demo.sh enrolls data/enroll/
# and streams data/*.wav; voicestream-split and voicestream-replay only look at
# data/*.wav.
#
# These voices were picked because resemblyzer's GE2E tells them apart (the
# default en-us and en-gb+m3 are close: 0.85 against 0.88 for the speaker
# itself on 2 s windows); the other espeak-ng voices still score 0.6-0.8
# against each other, above the 0.70 threshold, so a voice that is not
# enrolled is usually mistaken for the nearest one rather than called unknown.
#
# data/cohort/<voice>.wav: sixteen other espeak-ng voices (eight accents, two
# variants each, none of the four above), one sentence each at 16 kHz: the
# cohort voicestream-calibrate --methods normalizes scores against (S-norm).
#
# Each sample is synthesized speech with a pause between sentences (1 s in
# streamed samples, so VAD has voice on/off transitions to find; 0.7 s
# between the turns of the call; 0.5 s in enrollment samples, which only
# need speech), mono PCM 16, at 8 kHz (telephony) or 16 kHz. Output is
# deterministic: espeak-ng is, and sox runs in repeatable mode (-R) without
# dither (-D), so the pauses are digital silence and a rerun gives
# byte-identical files.
set -euo pipefail

cd "$(dirname "$0")/.."
out_dir="${SAMPLES_DIR:-data}"

for tool in espeak-ng sox; do
    if ! command -v "$tool" >/dev/null; then
        echo "make_samples.sh: $tool is not installed: apt-get install -y espeak-ng sox" >&2
        exit 1
    fi
done

mkdir -p "$out_dir/enroll"
tmp_dir="$(mktemp -d)"
trap 'rm -rf "$tmp_dir"' EXIT

# synthesize OUT VOICE RATE PAUSE_MS SENTENCE...: the sentences, each followed
# by PAUSE_MS of silence, as mono PCM 16 at RATE.
synthesize() {
    local out="$1" voice="$2" rate="$3" pause="<break time=\"$4ms\"/>"
    shift 4
    local ssml="<speak>" sentence
    for sentence in "$@"; do
        ssml+="${sentence}${pause}"
    done
    ssml+="</speak>"
    espeak-ng -m -v "$voice" -s 155 -w "$tmp_dir/espeak.wav" "$ssml"
    sox -R -D "$tmp_dir/espeak.wav" -r "$rate" -c 1 -b 16 -e signed-integer "$out"
}

# Half a second of silence before the first word, like a call picking up;
# the trailing break already ends the file with a pause.
lead_in() {
    sox -R -D "$1" "$2" pad 0.5 0
    printf '%-26s %s\n' "$2" "$(soxi -d "$2") s, $(soxi -r "$2") Hz"
}

# make_sample NAME VOICE RATE SENTENCE...: data/NAME.wav, 1 s pauses.
make_sample() {
    local name="$1" voice="$2" rate="$3"
    shift 3
    synthesize "$tmp_dir/$name.wav" "$voice" "$rate" 1000 "$@"
    lead_in "$tmp_dir/$name.wav" "$out_dir/$name.wav"
}

# make_enrollment SPEAKER VOICE RATE SENTENCE...: data/enroll/SPEAKER.wav.
make_enrollment() {
    local name="$1" voice="$2" rate="$3"
    shift 3
    synthesize "$tmp_dir/enroll-$name.wav" "$voice" "$rate" 500 "$@"
    lead_in "$tmp_dir/enroll-$name.wav" "$out_dir/enroll/$name.wav"
}

# make_call NAME RATE VOICE SENTENCE [VOICE SENTENCE]...: turns of different
# voices, one after the other, each followed by a 0.7 s pause (the samples
# stay within 15 s: tests/test_scripts.py).
make_call() {
    local name="$1" rate="$2" turns=() i=0
    shift 2
    while (($# >= 2)); do
        synthesize "$tmp_dir/$name-turn$i.wav" "$1" "$rate" 700 "$2"
        turns+=("$tmp_dir/$name-turn$i.wav")
        i=$((i + 1))
        shift 2
    done
    sox -R -D "${turns[@]}" "$tmp_dir/$name.wav"
    lead_in "$tmp_dir/$name.wav" "$out_dir/$name.wav"
}

# --- streamed samples (data/*.wav) -------------------------------------------

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

make_sample sc_female_16k en-gb-scotland+f2 16000 \
    "Hello, I am phoning about the parcel that never arrived." \
    "It was supposed to come on Tuesday morning." \
    "Could you tell me where it is now?"

make_call call_16k 16000 \
    en-gb+m3 "Thank you for calling. How can I help?" \
    en-us+f3 "Hi. My internet keeps dropping out every evening." \
    en-gb+m3 "Sorry to hear that. Let me test your line." \
    en-us+f3 "Great, thank you. I will wait."

# --- enrollment samples (data/enroll/<speaker>.wav) ---------------------------

make_enrollment us_male en-us 8000 \
    "My name is on the account, and I am calling about my last bill." \
    "I moved to a new address in March, so the letters went to the old one." \
    "Please call me back in the afternoon, after two o'clock."

make_enrollment us_female en-us+f3 16000 \
    "I have been a customer for about six years now." \
    "Last week the internet stopped working twice in the evening." \
    "Could someone send me an email with the new prices?"

make_enrollment gb_male en-gb+m3 16000 \
    "Good afternoon, you are speaking with the support team." \
    "I can see your details on the screen in front of me." \
    "Let me just check the history of this line for you."

make_enrollment sc_female en-gb-scotland+f2 16000 \
    "I live just outside Edinburgh, near the old railway station." \
    "My daughter set up this phone for me last winter." \
    "The weather has been rather wet and windy all week."

# --- cohort (data/cohort/<voice>.wav) -----------------------------------------

mkdir -p "$out_dir/cohort"
cohort_sentences=(
    "The train to the city leaves at half past seven every morning."
    "Please leave a message after the tone and I will call you back."
    "We ordered two coffees and a sandwich, but only the coffee came."
    "The meeting moved to Thursday because half the team was away."
)
i=0
for voice in en-gb-x-rp+m1 en-gb-x-rp+f4 en-gb-x-gbclan+m2 en-gb-x-gbclan+f1 en-gb-x-gbcwmd+m4 \
             en-gb-x-gbcwmd+f5 en-029+m5 en-029+f2 en-us-nyc+m6 en-us-nyc+f4 en-gb-scotland+m7 \
             en-gb-scotland+f1 en-us+m2 en-us+f5 en-gb+m6 en-gb+f2; do
    synthesize "$tmp_dir/cohort.wav" "$voice" 16000 300 "${cohort_sentences[$((i % 4))]}"
    lead_in "$tmp_dir/cohort.wav" "$out_dir/cohort/$voice.wav"
    i=$((i + 1))
done
