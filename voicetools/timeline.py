"""Who spoke when in an account's frame log: a PNG timeline, RTTM segments
and a per-speaker summary.

    .venv/bin/voicestream-timeline ACCOUNT                      # logs/ACCOUNT.txt -> logs/ACCOUNT.png
    .venv/bin/voicestream-timeline ACCOUNT --rttm ACCOUNT.rttm  # speaker segments, as diarization tools read
    .venv/bin/voicestream-tail ACCOUNT | .venv/bin/voicestream-timeline ACCOUNT --log - --summary

The log lines are read with voicestream.logline (the project's one parser).
Time (--clock stamps, the default) is each line's stamp, when the balancer
received the frame, relative to the first frame: the time of a live stream.
A frame lasts --frame-ms, or until the next frame's stamp if that comes
sooner, so frames streamed faster than real time never overlap. --clock
frames puts frame i at i * --frame-ms instead: the time in the audio of one
stream, whatever pace it was streamed at (a file replayed fast, say).

Segments: consecutive frames with the same speaker decision, merged. A frame
without a decision (silence, or speech before the first decision) ends a
segment, and so does a pause of more than --gap seconds (default 5) between
two frames: the client stopped streaming, or another run was appended to the
same log. Shorter holes are jitter (a frame that arrived late, while the
client keeps real-time pace) and do not split a segment. `unknown`
(speech that matched no enrolled speaker) makes segments of its own: drawn
in grey and counted in the summary, but left out of the RTTM unless
--keep-unknown, since it may be several people and is no one's identity.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from voicestream.logline import LogLine, parse_line
from voicestream.stamps import TEXT_FORMAT

PROG = "voicestream-timeline"
UNKNOWN = "unknown"  # the worker's decision when no enrolled speaker matches
FRAME_MS = 100.0     # the frame length clients stream (voicetools.split, voicetools.replay)
GAP_SECONDS = 5.0    # a pause that ends a segment: the stream stopped, not jitter
SIZE = (1200, 600)   # PNG pixels
DPI = 100


@dataclass(frozen=True, slots=True)
class Frame:
    start: float  # seconds since the first frame
    end: float
    voice: int
    speaker: str | None
    score: float | None


@dataclass(frozen=True, slots=True)
class Segment:
    speaker: str
    start: float
    end: float
    frames: int = 0  # 0 when not made of frames (a reference's segments, voicetools.conversation)

    @property
    def seconds(self) -> float:
        return self.end - self.start


def read_lines(lines: Iterable[str]) -> tuple[list[LogLine], int]:
    """The frame lines among lines, and how many other lines were skipped."""
    parsed, skipped = [], 0
    for text in lines:
        if not text.strip():
            continue
        line = parse_line(text)
        if line is None:
            skipped += 1
        else:
            parsed.append(line)
    return parsed, skipped


def to_frames(lines: Sequence[LogLine], frame_seconds: float = FRAME_MS / 1000, clock: str = "stamps") -> list[Frame]:
    """Frames on a time axis starting at 0: by the lines' stamps, or (clock
    "frames") one frame length apart."""
    if not lines:
        return []
    if clock == "frames":
        starts = [i * frame_seconds for i in range(len(lines))]
    else:
        stamps = [datetime.strptime(line.time, TEXT_FORMAT) for line in lines]
        starts = [(t - stamps[0]).total_seconds() for t in stamps]
    frames = []
    for i, line in enumerate(lines):
        end = starts[i] + frame_seconds
        if i + 1 < len(lines):
            end = min(end, max(starts[i + 1], starts[i]))
        frames.append(Frame(starts[i], end, line.voice, line.speaker, line.score))
    return frames


def last_run(frames: Sequence[Frame], gap_seconds: float = GAP_SECONDS) -> list[Frame]:
    """The frames after the last pause longer than gap_seconds, shifted to start at 0."""
    first = 0
    for i in range(1, len(frames)):
        if frames[i].start - frames[i - 1].end > gap_seconds:
            first = i
    if first == 0:
        return list(frames)
    origin = frames[first].start
    return [Frame(f.start - origin, f.end - origin, f.voice, f.speaker, f.score) for f in frames[first:]]


def segments(frames: Sequence[Frame], gap_seconds: float = GAP_SECONDS) -> list[Segment]:
    """Runs of consecutive frames with the same speaker decision (unknown
    included); ordered, and never overlapping since frames do not."""
    out: list[Segment] = []
    current: Segment | None = None
    previous: Frame | None = None
    for frame in frames:
        joins = (current is not None and previous is not None and frame.speaker == current.speaker
                 and frame.start - previous.end <= gap_seconds)
        if frame.speaker is None:
            current = None
        elif joins and current is not None:
            current = out[-1] = Segment(current.speaker, current.start, frame.end, current.frames + 1)
        else:
            current = Segment(frame.speaker, frame.start, frame.end, 1)
            out.append(current)
        previous = frame
    return out


def rttm_lines(account: str, segs: Iterable[Segment], keep_unknown: bool = False) -> list[str]:
    """SPEAKER <file> 1 <start> <dur> <NA> <NA> <name> <NA> <NA>, the account as the file id."""
    return [f"SPEAKER {account} 1 {s.start:.3f} {s.seconds:.3f} <NA> <NA> {s.speaker} <NA> <NA>"
            for s in segs if keep_unknown or s.speaker != UNKNOWN]


def letters(names: Iterable[str]) -> dict[str, str]:
    """A letter per speaker, in order of appearance; ? for unknown."""
    known = [n for n in dict.fromkeys(names) if n != UNKNOWN]
    return {**{n: chr(ord("A") + i % 26) for i, n in enumerate(known)}, UNKNOWN: "?"}


def strip(frames: Sequence[Frame], width: int = 100) -> list[str]:
    """One character per frame, width per line: . silence, # voice without a
    decision, ? unknown, a letter per speaker (a legend line first)."""
    letter = letters(f.speaker for f in frames if f.speaker is not None)
    chars = "".join(letter[f.speaker] if f.speaker is not None else ".#"[f.voice] for f in frames)
    used = [f"{c} {n}" for n, c in letter.items() if c in chars]
    legend = "by frame (. silence, # voice without a decision" + "".join(f", {u}" for u in used) + "):"
    return [legend, *(chars[i:i + width] for i in range(0, len(chars), width))]


def summary(account: str, frames: Sequence[Frame], segs: Sequence[Segment]) -> str:
    """Frames, seconds and segments per speaker as a small table, then the frames as a strip."""
    voiced = sum(f.voice for f in frames)
    undecided = sum(1 for f in frames if f.voice and f.speaker is None)
    head = f"{account}: {len(frames)} frames, {voiced} with voice"
    if not segs:
        head += ", no speaker decisions (is anyone enrolled in this account?)"
    rows = [("speaker", "frames", "seconds", "segments")]
    for name in sorted({s.speaker for s in segs}, key=lambda n: (n == UNKNOWN, n)):
        mine = [s for s in segs if s.speaker == name]
        rows.append((name, str(sum(s.frames for s in mine)), f"{sum(s.seconds for s in mine):.1f}", str(len(mine))))
    if undecided:
        rows.append(("(voice, no decision)", str(undecided), "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    table = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                  strict=True)))
             for row in rows] if segs else []
    return "\n".join([head, *("  " + line.rstrip() for line in [*table, *(strip(frames) if frames else [])])])


def colours(names: Sequence[str]) -> dict[str, object]:
    """One colour per speaker (tab10, in order of appearance); unknown grey."""
    from matplotlib import colormaps
    palette = colormaps["tab10"]
    known = [n for n in names if n != UNKNOWN]
    out: dict[str, object] = {n: palette(i % 10) for i, n in enumerate(known)}
    out[UNKNOWN] = (0.6, 0.6, 0.6, 1.0)
    return out


def draw(account: str, frames: Sequence[Frame], segs: Sequence[Segment], out: Path,
         threshold: float | None = None, size: tuple[int, int] = SIZE) -> None:
    """Voice per frame, speaker segments (one lane per speaker) and score, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(s.speaker for s in segs))
    names.sort(key=lambda n: n == UNKNOWN)  # unknown in the bottom lane
    colour = colours(names)
    fig, (ax_voice, ax_speaker, ax_score) = plt.subplots(
        3, 1, sharex=True, figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained",
        gridspec_kw={"height_ratios": [1, max(1.5, 0.5 * len(names)), 2]})
    fig.suptitle(f"{account}: {len(frames)} frames, "
                 f"{sum(f.voice for f in frames)} with voice, {len(names)} speaker label(s)")

    ax_voice.broken_barh([(f.start, f.end - f.start) for f in frames if f.voice], (0, 1), color="0.25")
    ax_voice.set_yticks([])
    ax_voice.set_ylabel("voice")

    for lane, name in enumerate(reversed(names)):
        ax_speaker.broken_barh([(s.start, s.seconds) for s in segs if s.speaker == name], (lane + 0.1, 0.8),
                               color=colour[name])
    ax_speaker.set_yticks([lane + 0.5 for lane in range(len(names))], list(reversed(names)))
    ax_speaker.set_ylim(0, max(1, len(names)))
    ax_speaker.set_ylabel("speaker")
    if not names:
        ax_speaker.text(0.5, 0.5, "no speaker decisions", transform=ax_speaker.transAxes, ha="center", va="center")

    for name in names:
        scored = [f for f in frames if f.speaker == name and f.score is not None]
        ax_score.scatter([f.start for f in scored], [f.score for f in scored], s=6, color=colour[name], label=name)
    if threshold is not None:
        ax_score.axhline(threshold, color="black", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g}")
    lowest = min([f.score for f in frames if f.score is not None] + [0.0, threshold or 0.0])
    ax_score.set_ylim(lowest - 0.05, 1.05)
    ax_score.set_ylabel("score")
    ax_score.set_xlabel("seconds since the first frame")
    if names or threshold is not None:
        ax_score.legend(loc="lower right", fontsize="small", ncols=min(5, len(names) + 1))
    if frames:
        ax_score.set_xlim(0, frames[-1].end)

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        size = (int(width), int(height))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT in pixels, got {text!r}") from None
    if min(size) < 100:
        raise argparse.ArgumentTypeError(f"size must be at least 100x100 pixels, got {text!r}")
    return size


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Draw an account's frame log (voice per frame, speaker segments in colour, score) as a PNG; "
                    "write its speaker segments as RTTM; print frames per speaker. With none of --out, --rttm "
                    "and --summary, the PNG goes next to the log (LOG.png).")
    p.add_argument("account", help="the ACCOUNTCODE (RTTM file id; the log is LOG_DIR/ACCOUNT.txt)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--log-dir", type=Path, default=Path(os.environ.get("LOG_DIR", "logs")),
                        help="per-account logs, as the workers' --log-dir (default: %(default)s) [LOG_DIR]")
    source.add_argument("--log", help="read this log file instead; - reads stdin (e.g. from voicestream-tail)")
    p.add_argument("--out", type=Path, help="write the PNG here")
    p.add_argument("--rttm", help="write the speaker segments as RTTM here; - writes to stdout")
    p.add_argument("--keep-unknown", action="store_true", help="also write unknown segments to the RTTM")
    p.add_argument("--summary", action="store_true", help="print frames, seconds and segments per speaker")
    p.add_argument("--last-run", action="store_true",
                   help="only the frames after the log's last pause longer than --gap (the latest stream)")
    p.add_argument("--gap", type=float, default=GAP_SECONDS,
                   help="a pause between two frames longer than this, in seconds, ends a segment and separates "
                        "runs (default: %(default)s)")
    p.add_argument("--clock", choices=("stamps", "frames"), default="stamps",
                   help="time axis: the frames' stamps (live time), or frame number * --frame-ms (time in the "
                        "audio of one stream, whatever its pace) (default: %(default)s)")
    p.add_argument("--frame-ms", type=float, default=FRAME_MS,
                   help="how long a frame lasts (default: %(default)s, the frames clients stream)")
    p.add_argument("--threshold", type=float, help="draw the speaker threshold on the score axis")
    p.add_argument("--size", type=parse_size, default=SIZE, help="PNG size in pixels (default: 1200x600)")
    a = p.parse_args(argv)
    if a.frame_ms <= 0 or a.gap <= 0:
        p.error("--frame-ms and --gap must be positive")
    if a.out is None and a.rttm is None and not a.summary:
        a.out = log_path(a).with_suffix(".png") if a.log != "-" else Path(f"{a.account}.png")
    return a


def log_path(a: argparse.Namespace) -> Path:
    return Path(a.log) if a.log is not None else a.log_dir / f"{a.account}.txt"


def read_log(a: argparse.Namespace) -> tuple[list[LogLine], int]:
    if a.log == "-":
        return read_lines(sys.stdin)
    with open(log_path(a), encoding="utf-8", errors="replace") as log:
        return read_lines(log)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        lines, skipped = read_log(a)
    except OSError as exc:
        print(f"{PROG}: cannot read the log of {a.account}: {exc}", file=sys.stderr)
        return 2
    if skipped:
        print(f"{PROG}: skipped {skipped} line(s) that are not frame lines", file=sys.stderr)
    frame_seconds = a.frame_ms / 1000
    frames = to_frames(lines, frame_seconds, a.clock)
    if a.last_run:
        frames = last_run(frames, a.gap)
    segs = segments(frames, a.gap)
    if a.summary:
        print(summary(a.account, frames, segs))
    if a.rttm is not None:
        text = "".join(line + "\n" for line in rttm_lines(a.account, segs, a.keep_unknown))
        if a.rttm == "-":
            sys.stdout.write(text)
        else:
            Path(a.rttm).write_text(text)
    if a.out is not None:
        draw(a.account, frames, segs, a.out, a.threshold, a.size)
        print(f"timeline of {a.account}: {a.out}", file=sys.stderr if a.rttm == "-" else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
