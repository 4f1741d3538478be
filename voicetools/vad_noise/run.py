"""One run: every condition through every detector, then the tables."""
from __future__ import annotations

import argparse
import dataclasses
import json
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from voicetools import vad_noise
from voicetools.paths import SHARED_DATA
from worker.config import parse_args as worker_args
from worker.vad import SileroOnnx, VadEngine, VadParams

from . import detectors
from .labels import active_segments, frame_labels, sample_mask, scored_frames
from .mixing import RATES, as_pcm16, babble, mix, resample, white
from .scoring import Counts, Onsets, count, onset_delays

PROG = "voicestream-vad-noise"
SNRS = (20, 10, 5)
NOISES = ("white", "babble")
CLEAN = ("clean", None)
# The decision as it was before issue 11 (VADIterator's hysteresis only), run
# beside the worker's current defaults so every table shows both.
BEFORE = VadParams(threshold=0.5, min_silence_ms=100, speech_pad_ms=0, min_speech_ms=0)


@dataclass(frozen=True, slots=True)
class Recording:
    name: str
    samples: np.ndarray
    rate: int
    active: np.ndarray  # 10 ms reference segments of the clean native recording


@dataclass(frozen=True, slots=True)
class Condition:
    rate: int
    noise: str
    snr: int | None

    @property
    def key(self) -> str:
        return f"{self.rate // 1000}k/{self.noise}" + (f"/{self.snr}dB" if self.snr is not None else "")


@dataclass(slots=True)
class Results:
    detectors: list[str]
    counts: dict[Condition, dict[str, Counts]] = field(default_factory=dict)
    onsets: dict[int, dict[str, Onsets]] = field(default_factory=dict)  # clean audio, per rate
    frames: dict[tuple[Condition, str], dict[str, np.ndarray]] = field(default_factory=dict)  # per file


def load(path: Path, seconds: float | None) -> Recording:
    samples, rate = sf.read(path, dtype="float32")
    if samples.ndim != 1:
        raise ValueError(f"{path}: mono recordings only")
    if seconds is not None:
        samples = samples[:int(seconds * rate)]
    return Recording(path.name, samples, rate, active_segments(samples, rate))


def babble_sources(data: Path, speech: list[Recording], rate: int) -> dict[str, np.ndarray]:
    sources = {f"{p.parent.name}/{p.name}": p for p in sorted((data / "speakers").glob("*/*.wav"))}
    out = {}
    for name, path in sources.items():
        samples, r = sf.read(path, dtype="float32")
        out[name] = resample(samples, r, rate)
    for rec in speech:
        out[rec.name] = resample(rec.samples, rec.rate, rate)
    return out


def seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def conditions(rates: Sequence[int], noises: Sequence[str], snrs: Sequence[int]) -> list[Condition]:
    return [Condition(r, n, s) for r in rates for n, s in [CLEAN, *((n, s) for n in noises for s in snrs)]]


def signals_at(rec: Recording, conds: list[Condition], rate: int, sources: dict[str, np.ndarray]) -> list[np.ndarray]:
    clean = resample(rec.samples, rec.rate, rate)
    active = sample_mask(rec.active, rate, len(clean))
    noises: dict[str, np.ndarray] = {}
    out = []
    for c in conds:
        if c.snr is None:
            out.append(as_pcm16(clean))
            continue
        if c.noise not in noises:
            if c.noise == "white":
                noises[c.noise] = white(len(clean), seed(rec.name, rate, "white"))
            else:  # never the recording being mixed
                others = [s for name, s in sources.items() if name != rec.name]
                noises[c.noise] = babble(others, len(clean), seed(rec.name, rate, "babble"))
        out.append(as_pcm16(mix(clean, active, noises[c.noise], c.snr)))
    return out


def run(recordings: list[Recording], conds: list[Condition], system: VadParams, data: Path,
        variants: dict[str, VadParams] | None = None,
        webrtc_modes: Sequence[int] = detectors.WEBRTC_MODES) -> Results:
    """variants: other decision settings run through the same worker code
    beside "system" (default: "before", the decision before issue 11)."""
    model = SileroOnnx()
    variants = {"before": BEFORE} if variants is None else variants
    engines = {**{name: VadEngine(model, params) for name, params in variants.items()},
               "system": VadEngine(model, system)}
    names = ["silero", *(f"webrtc{m}" for m in webrtc_modes), *engines]
    results = Results(names)
    for rate in sorted({c.rate for c in conds}):
        at_rate = [c for c in conds if c.rate == rate]
        sources = babble_sources(data, recordings, rate) if any(c.snr is not None and c.noise == "babble"
                                                                 for c in at_rate) else {}
        signals = [(rec, c, s) for rec in recordings for c, s in zip(at_rate, signals_at(rec, at_rate, rate, sources),
                                                                       strict=True)]
        batch = [s for _, _, s in signals]
        decisions: dict[str, list[np.ndarray]] = {"silero": detectors.raw_silero(model, batch, rate)}
        for m in webrtc_modes:
            decisions[f"webrtc{m}"] = [detectors.webrtc(s, rate, m) for s in batch]
        for name, engine in engines.items():
            decisions[name] = detectors.system(engine, batch, rate)
        for i, (rec, c, _) in enumerate(signals):
            labels = frame_labels(rec.active)
            frames = min(len(labels), *(len(decisions[n][i]) for n in names))
            labels, scored = labels[:frames], scored_frames(labels[:frames])
            per = results.counts.setdefault(c, {n: Counts() for n in names})
            results.frames[(c, rec.name)] = {n: decisions[n][i][:frames] for n in names}
            for n in names:
                per[n] = per[n] + count(labels, decisions[n][i][:frames], scored)
            if c.snr is None:
                on = results.onsets.setdefault(rate, {n: Onsets() for n in names})
                for n in names:
                    on[n] = on[n] + onset_delays(labels, decisions[n][i][:frames])
    return results


def points(x: float) -> str:
    return f"{100 * x:.1f}"


def always_f1(counts: Counts) -> float:
    """F1 of answering speech on every frame: what a detector that cannot
    tell the noise from speech scores."""
    return Counts(counts.tp + counts.fn, counts.fp + counts.tn).f1


def f1_table(results: Results) -> str:
    names = results.detectors
    head = ["condition", *names, "system − silero", "all speech"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, per in results.counts.items():
        delta = 100 * (per["system"].f1 - per["silero"].f1)
        lines.append(f"| {c.key} | " + " | ".join(points(per[n].f1) for n in names)
                     + f" | {delta:+.2f} | {points(always_f1(per['silero']))} |")
    return "\n".join(lines)


def pr_table(results: Results) -> str:
    names = results.detectors
    lines = ["| condition | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for c, per in results.counts.items():
        lines.append(f"| {c.key} | " + " | ".join(f"{points(per[n].precision)}/{points(per[n].recall)}"
                                                 for n in names) + " |")
    return "\n".join(lines)


def onset_table(results: Results) -> str:
    lines = ["| rate | detector | onsets | within 1 frame | mean delay ms | missed |", "|---|---|---|---|---|---|"]
    for rate, per in results.onsets.items():
        for n in results.detectors:
            o = per[n]
            lines.append(f"| {rate // 1000}k | {n} | {o.total} | {points(o.within_one_frame)}% | "
                         f"{100 * o.mean_delay:.0f} | {o.missed} |")
    return "\n".join(lines)


def report(results: Results, system: VadParams, variants: dict[str, VadParams]) -> str:
    scored = sum(c.tp + c.fp + c.fn + c.tn for c in next(iter(results.counts.values())).values()) // len(
        results.detectors) if results.counts else 0
    return "\n\n".join([
        "\n".join(f"{name}: {params}" for name, params in {**variants, "system": system}.items()),
        f"Frame F1 of speech, points (scored frames per condition: {scored})",
        f1_table(results),
        "Precision/recall, points",
        pr_table(results),
        "Onsets on clean audio (delay: reference onset frame -> first voiced frame)",
        onset_table(results),
    ])


def as_json(results: Results) -> dict:
    return {
        "detectors": results.detectors,
        "conditions": [{"rate": c.rate, "noise": c.noise, "snr": c.snr,
                        **{n: {**asdict(k), "f1": k.f1, "precision": k.precision, "recall": k.recall}
                           for n, k in per.items()}} for c, per in results.counts.items()],
        "onsets": {str(rate): {n: {"total": o.total, "within_one_frame": o.within_one_frame,
                                   "mean_delay_frames": o.mean_delay, "missed": o.missed}
                               for n, o in per.items()} for rate, per in results.onsets.items()},
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=vad_noise.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED_DATA,
                   help="the shared data directory (speech/ and speakers/) (default: %(default)s)")
    p.add_argument("--files", default="en_example.wav,sample1.wav,sample2.wav,sample3.wav",
                   help="comma-separated files of <data>/speech")
    p.add_argument("--seconds", type=float, default=None, help="use only the first SECONDS of each file")
    p.add_argument("--rates", default="8000,16000", help="comma-separated: 8000, 16000")
    p.add_argument("--noises", default=",".join(NOISES), help="comma-separated: white, babble")
    p.add_argument("--snrs", default=",".join(map(str, SNRS)), help="comma-separated SNRs in dB")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FIELD=VALUE,...",
                   help="another decision setting beside the worker's (repeatable), e.g. "
                        "pad200=speech_pad_ms=200,min_speech_ms=250; VadParams fields; default: before")
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args(argv)
    a.files = a.files.split(",")
    a.rates = [int(r) for r in a.rates.split(",")]
    a.noises = a.noises.split(",")
    a.snrs = [int(s) for s in a.snrs.split(",")]
    if bad := [r for r in a.rates if r not in RATES]:
        p.error(f"--rates: {bad} not in {list(RATES)}")
    if bad := [n for n in a.noises if n not in NOISES]:
        p.error(f"--noises: {bad} not in {list(NOISES)}")
    try:
        a.variants = dict(variant(text) for text in a.variant) if a.variant else {"before": BEFORE}
    except ValueError as exc:
        p.error(f"--variant: {exc}")
    missing = [f for f in a.files if not (a.data / "speech" / f).is_file()]
    if missing:
        p.error(f"not found in {a.data / 'speech'}: {', '.join(missing)}")
    return a


def variant(text: str) -> tuple[str, VadParams]:
    """'name=field=value,field=value' -> (name, VadParams with those fields)."""
    name, _, spec = text.partition("=")
    fields = {f.name: f.type for f in dataclasses.fields(VadParams)}
    values: dict[str, float | int] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise ValueError(f"{key!r} in {text!r} is not one of {', '.join(fields)}")
        values[key] = float(value) if key == "threshold" else int(value)
    if not name or name == "system":
        raise ValueError(f"{text!r} needs a name other than 'system' before the first '='")
    return name, VadParams(**values)  # type: ignore[arg-type]


def system_params() -> VadParams:
    """The worker's VAD settings with no options given."""
    return VadParams.from_config(worker_args([], environ={}))


def main(argv: Sequence[str] | None = None) -> int:
    a = parse(argv)
    recordings = [load(a.data / "speech" / f, a.seconds) for f in a.files]
    system = system_params()
    results = run(recordings, conditions(a.rates, a.noises, a.snrs), system, a.data, a.variants)
    print(report(results, system, a.variants))
    if a.json:
        a.json.write_text(json.dumps(as_json(results), indent=1))
    return 0
