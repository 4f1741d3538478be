"""Calibrate speaker verification on a folder of speaker_x/*.wav recordings.

For every speaker folder the first --enroll-files WAVs (sorted by name) are
enrolled, the rest are scored: as streaming-sized windows (100 ms frames
through the worker's VAD and rolling window, one window per hop, exactly as a
worker streams) and as whole files (their voiced audio, as /verify does).
Enrollment, VAD, windowing and scoring are the worker's own code.

Printed per encoder and window length (windows that fill it; a "live" row
adds the shorter windows a worker embeds at the start of each turn, for the
window it is configured with): trials, EER, the threshold at the EER,
closed-set identification accuracy (best score is the right speaker), the
accuracy of the decision at that threshold (right speaker and above it), and
the encoder's time per window.

--write-config FILE merges SPEAKER_ENCODER and SPEAKER_THRESHOLD (the
threshold at EER for --config-window) into a dotenv file. Workers read both
from the environment; honcho loads .env next to the Procfile by itself:

    .venv/bin/python scripts/calibrate.py --encoders ge2e --write-config .env

Example:
    .venv/bin/python scripts/calibrate.py ../shared/data/speakers --encoders ge2e,ecapa \\
        --ecapa-source /models/spkrec-ecapa-voxceleb
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from percentile import percentile  # noqa: E402
from worker.audio import Audio, decode_wav, to_16k  # noqa: E402
from worker.speakers.encoders import Encoder, Unavailable  # noqa: E402
from worker.speakers.export.torch_encoders import load_encoder  # noqa: E402
from worker.speakers.scoring import Roster  # noqa: E402
from worker.speakers.store import EncoderId, VoiceprintStore  # noqa: E402
from worker.speakers.tracker import SpeechWindow  # noqa: E402
from worker.vad import SileroOnnx, VadEngine, VadParams, VadStream, voiced_samples  # noqa: E402

FRAME_SECONDS = 0.1
WHOLE = "whole"


@dataclass(frozen=True)
class Result:
    encoder: str
    window: str
    targets: int
    nontargets: int
    eer: float
    threshold: float
    ident_accuracy: float
    decision_accuracy: float
    ms_per_window: float | None


def eer(target: np.ndarray, nontarget: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold at it). A trial is accepted when its score
    is >= the threshold; the threshold is placed between the two scores where
    the false-accept and false-reject rates cross."""
    target, nontarget = np.sort(np.asarray(target, float)), np.sort(np.asarray(nontarget, float))
    if len(target) == 0 or len(nontarget) == 0:
        raise ValueError("EER needs target and non-target trials")
    candidates = np.unique(np.concatenate((target, nontarget, [np.inf])))
    frr = np.searchsorted(target, candidates, side="left") / len(target)        # targets below t
    far = 1 - np.searchsorted(nontarget, candidates, side="left") / len(nontarget)  # non-targets >= t
    i = int(np.argmin(np.abs(far - frr)))
    rate = (far[i] + frr[i]) / 2
    # Midway between this candidate and the next lower score reads better and
    # generalizes better than a threshold sitting exactly on a trial's score.
    lower = candidates[i - 1] if i > 0 else candidates[i]
    threshold = candidates[i] if not np.isfinite(candidates[i]) else (candidates[i] + lower) / 2
    return float(rate), float(threshold if np.isfinite(threshold) else candidates[-2])


def speaker_files(folder: Path) -> dict[str, list[Path]]:
    speakers = {d.name: sorted(d.glob("*.wav")) for d in sorted(folder.iterdir()) if d.is_dir()}
    return {name: files for name, files in speakers.items() if files}


def read_wav(path: Path) -> Audio:
    return decode_wav(path.read_bytes(), max_seconds=float("inf"))


def streaming_windows(vad: VadEngine, audio: Audio, window_seconds: float, hop_seconds: float,
                      full: bool = False) -> list[np.ndarray]:
    """The 16 kHz windows a worker would embed while this file streams in
    100 ms frames (reset disabled: one file is one turn). full: only those
    that fill window_seconds, not the shorter ones at the start of a turn."""
    stream = VadStream(audio.sample_rate)
    window = SpeechWindow.for_rate(audio.sample_rate, window_seconds, hop_seconds, 0.0)
    frame = int(FRAME_SECONDS * audio.sample_rate)
    windows = []
    for start in range(0, len(audio.samples) - frame + 1, frame):
        samples = audio.samples[start:start + frame]
        voice = vad.process(stream, samples).voice
        if window.add(samples, voice) and (not full or len(window.samples) == window.capacity):
            windows.append(to_16k(Audio(window.samples.copy(), audio.sample_rate)))
            window.decided("", 0.0)
    return windows


def embed_all(encoder: Encoder, windows: list[np.ndarray], batch: int = 16) -> np.ndarray:
    return np.concatenate([encoder.embed_batch(windows[i:i + batch]) for i in range(0, len(windows), batch)])


def time_per_window(encoder: Encoder, windows: list[np.ndarray], n: int = 20) -> float:
    """Median ms of embedding one window alone, as a worker does for one account."""
    times = []
    for w in windows[:n]:
        started = time.perf_counter()
        encoder.embed_batch([w])
        times.append((time.perf_counter() - started) * 1000)
    return percentile(times, 50) or 0.0


def score(encoder: Encoder, names: list[str], matrix: np.ndarray, labels: list[str], embeddings: np.ndarray,
          window: str, ms: float | None) -> Result:
    scores = embeddings @ matrix.T  # (trials, speakers)
    truth = np.array([names.index(label) for label in labels])
    is_target = np.zeros_like(scores, bool)
    is_target[np.arange(len(truth)), truth] = True
    rate, threshold = eer(scores[is_target], scores[~is_target])
    best = scores.argmax(axis=1)
    ident = float((best == truth).mean())
    decided = float(((best == truth) & (scores.max(axis=1) >= threshold)).mean())
    return Result(encoder.name, window, int(is_target.sum()), int((~is_target).sum()), rate, threshold,
                  ident, decided, ms)


def live_label(seconds: float) -> str:
    return f"live {seconds:g} s"


def calibrate(encoder: Encoder, vad: VadEngine, speakers: dict[str, list[Path]], enroll_files: int,
              windows: list[float], live_window: float, hop: float, min_enroll_seconds: float) -> list[Result]:
    encoder_id = EncoderId(encoder.name, encoder.model, encoder.dim)
    with tempfile.TemporaryDirectory() as tmp:
        store = VoiceprintStore(Path(tmp) / "calibration.db")
        for name, files in speakers.items():
            for path in files[:enroll_files]:
                speech = voiced_samples(vad, read_wav(path))
                rate = read_wav(path).sample_rate
                if len(speech) / rate < min_enroll_seconds:
                    print(f"  skip enrollment {path}: {len(speech) / rate:.2f} s of speech", file=sys.stderr)
                    continue
                store.enroll("calibration", name, encoder_id, encoder.embed_batch([to_16k(Audio(speech, rate))])[0],
                             len(speech) / rate)
        enrolled = Roster(store).enrolled("calibration", encoder_id)
    if enrolled is None:
        print(f"{encoder.name}: no speaker had {min_enroll_seconds:g} s of speech in a file to enroll",
              file=sys.stderr)
        return []
    names, matrix = list(enrolled.names), enrolled.matrix
    tests = [(name, read_wav(path)) for name, files in speakers.items() if name in names
             for path in files[enroll_files:]]
    results = []
    # Fixed lengths: only windows that fill the length. Live: every window
    # the worker embeds at that length, including the shorter ones (from
    # MIN_WINDOW_SECONDS up) at the start of each turn.
    runs = [(seconds, True, f"{seconds:g} s") for seconds in windows]
    runs.append((live_window, False, live_label(live_window)))
    for seconds, full, label in runs:
        labels, cut = [], []
        for name, audio in tests:
            ws = streaming_windows(vad, audio, seconds, hop, full)
            cut += ws
            labels += [name] * len(ws)
        if not cut:
            continue
        ms = time_per_window(encoder, cut)
        results.append(score(encoder, names, matrix, labels, embed_all(encoder, cut), label, ms))
    voiced = [(name, to_16k(Audio(voiced_samples(vad, audio), audio.sample_rate))) for name, audio in tests]
    voiced = [(name, w) for name, w in voiced if len(w) > 0]
    results.append(score(encoder, names, matrix, [n for n, _ in voiced],
                         embed_all(encoder, [w for _, w in voiced], batch=1), WHOLE, None))
    return results


def table(results: list[Result]) -> str:
    head = (f"{'encoder':8} {'window':>7} {'trials tgt/non':>15} {'EER':>7} {'thr@EER':>8} {'ident':>7} "
            f"{'decide':>7} {'ms/win':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        ms = f"{r.ms_per_window:7.1f}" if r.ms_per_window is not None else f"{'-':>7}"
        lines.append(f"{r.encoder:8} {r.window:>7} {f'{r.targets}/{r.nontargets}':>15} {r.eer:7.1%} "
                     f"{r.threshold:8.3f} {r.ident_accuracy:7.1%} {r.decision_accuracy:7.1%} {ms}")
    return "\n".join(lines)


def write_dotenv(path: Path, values: dict[str, str]) -> None:
    """Set keys in a dotenv file, keeping every other line as it was."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in values]
    path.write_text("\n".join(kept + [f"{k}={v}" for k, v in values.items()]) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", type=Path, default=REPO.parent / "shared" / "data" / "speakers",
                   help="folder of speaker_x/*.wav (default: ../shared/data/speakers)")
    p.add_argument("--encoders", default="ge2e", help="comma-separated: ge2e, ecapa (default: ge2e)")
    p.add_argument("--ecapa-source", default="speechbrain/spkrec-ecapa-voxceleb", help="hub id or local directory")
    p.add_argument("--model-dir", default="models", help="where hub models are cached")
    p.add_argument("--enroll-files", type=int, default=2, help="files per speaker to enroll from (default 2)")
    p.add_argument("--windows", default="1,1.5,2,2.5,3",
                   help="streaming window lengths in seconds (default 1,1.5,2,2.5,3)")
    p.add_argument("--hop", type=float, default=0.5, help="new speech between streaming decisions (default 0.5)")
    p.add_argument("--min-enroll-seconds", type=float, default=3.0, help="skip enrollment files with less speech")
    p.add_argument("--vad-threshold", type=float, default=0.5)
    p.add_argument("--vad-min-silence-ms", type=int, default=100)
    p.add_argument("--write-config", type=Path, metavar="FILE",
                   help="merge SPEAKER_ENCODER and SPEAKER_THRESHOLD into this dotenv file (one encoder only)")
    p.add_argument("--config-window", type=float, default=2.0,
                   help="the worker's --window-seconds: its live row is added to the table and its threshold at "
                        "EER is what --write-config writes (default 2.0, the worker's default)")
    a = p.parse_args(argv)

    encoders = [e.strip() for e in a.encoders.split(",") if e.strip()]
    windows = [float(w) for w in a.windows.split(",") if w.strip()]
    if a.write_config and len(encoders) != 1:
        p.error("--write-config needs exactly one encoder in --encoders")
    speakers = speaker_files(a.folder)
    short = [name for name, files in speakers.items() if len(files) <= a.enroll_files]
    if short:
        p.error(f"speakers with no file left to test after {a.enroll_files} enrollment files: {', '.join(short)}")
    if len(speakers) < 2:
        p.error(f"{a.folder} needs at least two speaker folders with WAVs")
    print(f"{len(speakers)} speakers in {a.folder}: "
          + ", ".join(f"{n} ({len(f)} files)" for n, f in speakers.items())
          + f"; enroll {a.enroll_files} files each, hop {a.hop:g} s", flush=True)

    vad = VadEngine(SileroOnnx(), VadParams(a.vad_threshold, a.vad_min_silence_ms))
    import torch
    torch.set_num_threads(1)  # as in a worker
    results: list[Result] = []
    for kind in encoders:
        encoder = load_encoder(kind, a.ecapa_source, a.model_dir)
        if isinstance(encoder, Unavailable):
            print(f"{kind}: unavailable: {encoder.reason}", file=sys.stderr)
            continue
        encoder.embed_batch([np.zeros(32000, np.float32) + 1e-3])  # warm-up, as the worker's engine does
        results += calibrate(encoder, vad, speakers, a.enroll_files, windows, a.config_window, a.hop,
                             a.min_enroll_seconds)
    if not results:
        return 1
    print(table(results))
    print("EER, thr@EER: equal error rate of target vs non-target scores and the threshold where it falls;\n"
          "ident: best-scoring speaker is right (closed set); decide: right and >= thr@EER;\n"
          "ms/win: median encoder time for one window, one torch thread.")
    if a.write_config:
        chosen = next(r for r in results if r.window == live_label(a.config_window))
        write_dotenv(a.write_config, {"SPEAKER_ENCODER": chosen.encoder,
                                      "SPEAKER_THRESHOLD": f"{chosen.threshold:.4f}"})
        print(f"wrote SPEAKER_ENCODER={chosen.encoder} SPEAKER_THRESHOLD={chosen.threshold:.4f} to {a.write_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
