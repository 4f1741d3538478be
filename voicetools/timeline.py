"""Who spoke when in an account's logs: a PNG timeline, RTTM segments and a
per-speaker summary.

    .venv/bin/voicestream-timeline ACCOUNT                      # logs/ACCOUNT.txt -> logs/ACCOUNT.png
    .venv/bin/voicestream-timeline ACCOUNT --rttm ACCOUNT.rttm  # speaker segments, as diarization tools read
    .venv/bin/voicestream-tail ACCOUNT | .venv/bin/voicestream-timeline ACCOUNT --log - --summary

Two sources of speaker turns:
- final labels (the default): the worker's segments, <log-dir>/ACCOUNT.segments.txt
  (voicestream.segments, one line per segment: a run of consecutive voiced
  frames of one stream with one final speaker, made final up to
  --speaker-lag-ms after its last frame). They are what the RTTM and the PNG's
  "final" row show.
- immediate labels: each frame's speaker in the frame log (voicestream.logline),
  as the stream was answered. The PNG's "immediate" row; `--labels immediate`
  writes them as the RTTM. Without a segments file (an older worker, or VAD
  only), or with no segment in the frames read, the tool says so and the
  turns come from the immediate labels.

Time (--clock stamps, the default) is each frame line's stamp, when the balancer
received the frame, relative to the first frame read: the time of a live stream.
A frame lasts --frame-ms, or until the next frame's stamp if that comes
sooner, so frames streamed faster than real time never overlap. --clock
frames puts the log's frame i at i * --frame-ms instead: the time in the audio of
one stream, whatever pace it was streamed at (a file replayed fast, say).

A final segment (first frame's stamp, last frame's stamp, seqs start..end of
its stream) on those axes:
- stamps: from its first frame's stamp to its last frame's stamp plus a frame
  (--frame-ms), or to the next final segment's start if that comes sooner;
- frames: frame k of a stream covers (k-1)..k x --frame-ms from the stream's
  start, so the segment covers (start-1)..end x --frame-ms from there. The
  stream starts where the frame log puts it: the log position of its first
  final segment's first frame (found by its stamp) less (start-1) frames; for a
  log of one stream from its frame 1, every frame logged once, that is 0 and
  log frame i is seq i+1.
Only segments whose first frame is among the frames read count (a log
gathers every run of its account, --last-run or a piped tail reads fewer);
the others are counted on stderr.

Immediate segments: consecutive frames with the same speaker decision, merged. A frame
without a decision (silence, or speech before the first decision) ends a
segment, and so does a pause of more than --gap seconds (default 5) between
two frames: the client stopped streaming, or another run was appended to the
same log. Shorter holes are jitter (a frame that arrived late, while the
client keeps real-time pace) and do not split a segment. `unknown`
(speech that matched no enrolled speaker) makes segments of its own, final or
immediate: drawn in grey and counted in the summary, but left out of the RTTM
unless --keep-unknown, since it may be several people and is no one's identity.
"""
from __future__ import annotations

import argparse
import bisect
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from voicestream.logline import LogLine, parse_line
from voicestream.segments import SegmentLine, parse_segment
from voicestream.stamps import TEXT_FORMAT

PROG = "voicestream-timeline"
UNKNOWN = "unknown"  # the worker's decision when no enrolled speaker matches
FRAME_MS = 100.0     # the frame length clients stream (voicetools.split, voicetools.replay)
GAP_SECONDS = 5.0    # a pause that ends a segment: the stream stopped, not jitter
SIZE = (1200, 700)   # PNG pixels
DPI = 100
FINAL, IMMEDIATE = "final", "immediate"  # the two sources of speaker turns
SEGMENTS_SUFFIX = ".segments.txt"        # beside ACCOUNT.txt (worker/storage/segments.py)


@dataclass(frozen=True, slots=True)
class Frame:
    start: float  # seconds since the first frame
    end: float
    voice: int
    speaker: str | None
    score: float | None
    time: str = ""  # the line's stamp as text (logline), how a final segment names its frames


@dataclass(frozen=True, slots=True)
class Segment:
    speaker: str
    start: float
    end: float
    frames: int = 0  # 0 when not made of frames (a reference's segments, voicetools.conversation)
    score: float | None = None  # a final segment's mean score (segments file); None for immediate ones

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Finals:
    """The final labels of the frames read: the segments file's lines placed
    on the frames' time axis."""
    path: str                        # the segments file
    segments: list[Segment]          # in order, never overlapping within a stream
    by_frame: list[str | None]       # each frame's final speaker; None where no segment covers it
    left_out: int = 0                # segment lines whose first frame is not among the frames read
    skipped: int = 0                 # lines that are not segment lines
    streams: set[str] = field(default_factory=set)


Parsed = TypeVar("Parsed")


def parsed_lines(lines: Iterable[str], parse: Callable[[str], Parsed | None]) -> tuple[list[Parsed], int]:
    """What parse makes of the non-blank lines, and how many it refused."""
    parsed, skipped = [], 0
    for text in lines:
        if not text.strip():
            continue
        line = parse(text)
        if line is None:
            skipped += 1
        else:
            parsed.append(line)
    return parsed, skipped


def read_lines(lines: Iterable[str]) -> tuple[list[LogLine], int]:
    """The frame lines among lines, and how many other lines were skipped."""
    return parsed_lines(lines, parse_line)


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
        frames.append(Frame(starts[i], end, line.voice, line.speaker, line.score, line.time))
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
    return [Frame(f.start - origin, f.end - origin, f.voice, f.speaker, f.score, f.time) for f in frames[first:]]


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


def read_segment_lines(lines: Iterable[str]) -> tuple[list[SegmentLine], int]:
    """The segment lines among lines, and how many other lines were skipped."""
    return parsed_lines(lines, parse_segment)


def stream_span(line: SegmentLine, frame_seconds: float = FRAME_MS / 1000) -> tuple[float, float]:
    """The seconds a segment covers from its stream's start: frame k covers
    (k-1)..k frame lengths, so start_seq..end_seq covers (start_seq-1)..end_seq."""
    return (line.start_seq - 1) * frame_seconds, line.end_seq * frame_seconds


def among(lines: Iterable[SegmentLine], frames: Sequence[Frame]) -> list[SegmentLine]:
    """The segment lines whose first frame is among frames (by its stamp)."""
    times = {f.time for f in frames}
    return [line for line in lines if line.start in times]


def final_segments(lines: Sequence[SegmentLine], frames: Sequence[Frame], frame_seconds: float = FRAME_MS / 1000,
                   clock: str = "stamps") -> list[Segment]:
    """Segment lines of frames (among()) on the frames' time axis (the
    module's docstring defines it), in order."""
    index = {f.time: i for i, f in enumerate(frames)}
    kept = among(lines, frames)
    if clock == "frames":
        # Each stream starts where the log has its first final segment's first frame.
        origins: dict[str, float] = {}
        for line in sorted(kept, key=lambda line: line.start_seq):
            origins.setdefault(line.stream, frames[index[line.start]].start - stream_span(line, frame_seconds)[0])
        placed = [(origins[line.stream] + stream_span(line, frame_seconds)[0],
                   origins[line.stream] + stream_span(line, frame_seconds)[1], line) for line in kept]
    else:
        first = datetime.strptime(frames[0].time, TEXT_FORMAT) if frames else datetime.min

        def at(stamp: str) -> float:
            return frames[0].start + (datetime.strptime(stamp, TEXT_FORMAT) - first).total_seconds()
        placed = [(at(line.start), at(line.end) + frame_seconds, line) for line in kept]
    placed.sort(key=lambda item: (item[0], item[1]))
    out = []
    for i, (start, end, line) in enumerate(placed):
        if clock != "frames" and i + 1 < len(placed):
            end = min(end, max(placed[i + 1][0], start))  # as to_frames: no overlap at a fast pace
        out.append(Segment(line.speaker, start, end, line.frames, line.score))
    return out


def final_by_frame(lines: Sequence[SegmentLine], frames: Sequence[Frame]) -> list[str | None]:
    """Each frame's final speaker: the segment line whose first..last stamps
    hold the frame's stamp (stamps grow along a log: one balancer's are
    strictly increasing), None where none does."""
    out: list[str | None] = [None] * len(frames)
    order = sorted(range(len(frames)), key=lambda i: frames[i].time)
    times = [frames[i].time for i in order]
    for line in lines:
        for k in range(bisect.bisect_left(times, line.start), bisect.bisect_right(times, line.end)):
            out[order[k]] = line.speaker
    return out


def read_finals(path: Path, frames: Sequence[Frame], frame_seconds: float = FRAME_MS / 1000,
                clock: str = "stamps") -> Finals:
    """The segments file at path for frames; OSError when it cannot be read."""
    with open(path, encoding="utf-8", errors="replace") as file:
        lines, skipped = read_segment_lines(file)
    kept = among(lines, frames)
    return Finals(str(path), final_segments(lines, frames, frame_seconds, clock), final_by_frame(kept, frames),
                  len(lines) - len(kept), skipped, {line.stream for line in kept})


def rttm_lines(account: str, segs: Iterable[Segment], keep_unknown: bool = False) -> list[str]:
    """SPEAKER <file> 1 <start> <dur> <NA> <NA> <name> <NA> <NA>, the account as the file id."""
    return [f"SPEAKER {account} 1 {s.start:.3f} {s.seconds:.3f} <NA> <NA> {s.speaker} <NA> <NA>"
            for s in segs if keep_unknown or s.speaker != UNKNOWN]


def letters(names: Iterable[str]) -> dict[str, str]:
    """A letter per speaker, in order of appearance; ? for unknown."""
    known = [n for n in dict.fromkeys(names) if n != UNKNOWN]
    return {**{n: chr(ord("A") + i % 26) for i, n in enumerate(known)}, UNKNOWN: "?"}


def strip(frames: Sequence[Frame], width: int = 100, finals: Sequence[str | None] | None = None) -> list[str]:
    """One character per frame, width per line: . silence, # voice without a
    label, ? unknown, a letter per speaker (a legend line first). With finals
    (each frame's final speaker), two rows per line: final, then immediate."""
    names = [f.speaker for f in frames if f.speaker is not None] + [n for n in finals or () if n is not None]
    letter = letters(names)

    def row(speakers: Iterable[str | None]) -> str:
        return "".join(letter[s] if s is not None else ".#"[f.voice] for f, s in zip(frames, speakers, strict=True))
    now = row(f.speaker for f in frames)
    rows = [row(finals)] if finals is not None else []
    used = [f"{c} {n}" for n, c in letter.items() if any(c in r for r in (now, *rows))]
    legend = "by frame (. silence, # voice without a label" + "".join(f", {u}" for u in used) + "):"
    if finals is None:
        return [legend, *(now[i:i + width] for i in range(0, len(now), width))]
    return [legend, *(line for i in range(0, len(now), width)
                      for line in (f"{FINAL:<10}{rows[0][i:i + width]}", f"{IMMEDIATE:<10}{now[i:i + width]}"))]


def table(segs: Sequence[Segment], undecided: int = 0) -> list[str]:
    """Frames, seconds and segments per speaker (unknown last)."""
    rows = [("speaker", "frames", "seconds", "segments")]
    for name in sorted({s.speaker for s in segs}, key=lambda n: (n == UNKNOWN, n)):
        mine = [s for s in segs if s.speaker == name]
        rows.append((name, str(sum(s.frames for s in mine)), f"{sum(s.seconds for s in mine):.1f}", str(len(mine))))
    if undecided:
        rows.append(("(voice, no label)", str(undecided), "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                 strict=True)))
            .rstrip() for row in rows]


def summary(account: str, frames: Sequence[Frame], segs: Sequence[Segment], finals: Finals | None = None,
            missing: str = "") -> str:
    """The final labels' table (or why there are none), the immediate labels'
    (segs), then the frames as a strip."""
    voiced = sum(f.voice for f in frames)
    head = f"{account}: {len(frames)} frames, {voiced} with voice"
    out = [head]
    if finals is not None and finals.segments:
        unlabelled = sum(1 for f, s in zip(frames, finals.by_frame, strict=True) if f.voice and s is None)
        out.append(f"final labels: {len(finals.segments)} segments ({finals.path})")
        out += ["  " + line for line in table(finals.segments, unlabelled)]
    else:
        out.append(f"final labels: none ({missing})" if missing else "final labels: none")
    undecided = sum(1 for f in frames if f.voice and f.speaker is None)
    if segs:
        out += ["immediate labels:", *("  " + line for line in table(segs, undecided))]
    else:
        out.append("immediate labels: none (is anyone enrolled in this account?)")
    if frames:
        out += strip(frames, finals=finals.by_frame if finals is not None else None)
    return "\n".join([head, *("  " + line for line in out[1:])])


def colours(names: Sequence[str]) -> dict[str, object]:
    """One colour per speaker (tab10, in order of appearance); unknown grey."""
    from matplotlib import colormaps
    palette = colormaps["tab10"]
    known = [n for n in names if n != UNKNOWN]
    out: dict[str, object] = {n: palette(i % 10) for i, n in enumerate(known)}
    out[UNKNOWN] = (0.6, 0.6, 0.6, 1.0)
    return out


def draw(account: str, frames: Sequence[Frame], segs: Sequence[Segment], out: Path,
         threshold: float | None = None, size: tuple[int, int] = SIZE, finals: Sequence[Segment] | None = None,
         no_finals: str = "no final labels") -> None:
    """Voice per frame, final segments and immediate segments (segs) (one
    lane per speaker each), and scores, as a PNG. finals None: the final row
    says no_finals."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    finals = finals or []
    names = list(dict.fromkeys([*(s.speaker for s in finals), *(s.speaker for s in segs)]))
    names.sort(key=lambda n: n == UNKNOWN)  # unknown in the bottom lane
    colour = colours(names)
    lanes = max(1.5, 0.5 * len(names))
    fig, (ax_voice, ax_final, ax_now, ax_score) = plt.subplots(
        4, 1, sharex=True, figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained",
        gridspec_kw={"height_ratios": [1, lanes, lanes, 2]})
    fig.suptitle(f"{account}: {len(frames)} frames, {sum(f.voice for f in frames)} with voice, "
                 f"{len(finals)} final segment(s), {len(names)} speaker label(s)")

    ax_voice.broken_barh([(f.start, f.end - f.start) for f in frames if f.voice], (0, 1), color="0.25")
    ax_voice.set_yticks([])
    ax_voice.set_ylabel("voice")

    for ax, shown, label, empty in ((ax_final, finals, FINAL, no_finals),
                                    (ax_now, segs, IMMEDIATE, "no immediate labels")):
        mine = list(dict.fromkeys(s.speaker for s in shown))
        rows = [n for n in names if n in mine]
        for lane, name in enumerate(reversed(rows)):
            ax.broken_barh([(s.start, s.seconds) for s in shown if s.speaker == name], (lane + 0.1, 0.8),
                           color=colour[name])
        ax.set_yticks([lane + 0.5 for lane in range(len(rows))], list(reversed(rows)))
        ax.set_ylim(0, max(1, len(rows)))
        ax.set_ylabel(label)
        if not rows:
            ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center")

    # Scores: dots for the frames' immediate labels, a line over each final segment (its mean).
    for name in names:
        scored = [f for f in frames if f.speaker == name and f.score is not None]
        ax_score.scatter([f.start for f in scored], [f.score for f in scored], s=6, color=colour[name], label=name)
        lined = [s for s in finals if s.speaker == name and s.score is not None]
        ax_score.hlines([s.score for s in lined], [s.start for s in lined], [s.end for s in lined],
                        color=colour[name], linewidth=2.5)
    if threshold is not None:
        ax_score.axhline(threshold, color="black", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g}")
    lowest = min([f.score for f in frames if f.score is not None] + [s.score for s in finals if s.score is not None]
                 + [0.0, threshold or 0.0])
    ax_score.set_ylim(lowest - 0.05, 1.05)
    ax_score.set_ylabel("score")
    ax_score.set_xlabel("seconds since the first frame (dots: frames, lines: final segments)")
    if names or threshold is not None:
        ax_score.legend(loc="lower right", fontsize="small", ncols=min(5, len(names) + 1))
    if frames:
        ax_score.set_xlim(0, max([frames[-1].end, *(s.end for s in finals)]))

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
        description="Draw an account's logs (voice per frame, final and immediate speaker segments in colour, "
                    "scores) as a PNG; write its speaker segments as RTTM (the final labels of the segments file, "
                    "or the frame log's immediate labels); print frames per speaker. With none of --out, --rttm "
                    "and --summary, the PNG goes next to the log (LOG.png).")
    p.add_argument("account", help="the ACCOUNTCODE (RTTM file id; the log is LOG_DIR/ACCOUNT.txt)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--log-dir", type=Path, default=Path(os.environ.get("LOG_DIR", "logs")),
                        help="per-account logs, as the workers' --log-dir (default: %(default)s) [LOG_DIR]")
    source.add_argument("--log", help="read this frame log instead; - reads stdin (e.g. from voicestream-tail)")
    p.add_argument("--segments", type=Path,
                   help="the final labels' segments file (default: beside the log, ACCOUNT.segments.txt; none "
                        "with --log -)")
    p.add_argument("--labels", choices=(FINAL, IMMEDIATE),
                   help="speaker turns for the RTTM: final (the segments file) or immediate (the frame log) "
                        "(default: final, or immediate when there are no final labels, said on stderr)")
    p.add_argument("--out", type=Path, help="write the PNG here")
    p.add_argument("--rttm", help="write the speaker segments as RTTM here; - writes to stdout")
    p.add_argument("--keep-unknown", action="store_true", help="also write unknown segments to the RTTM")
    p.add_argument("--summary", action="store_true", help="print frames, seconds and segments per speaker")
    p.add_argument("--last-run", action="store_true",
                   help="only the frames after the log's last pause longer than --gap (the latest stream)")
    p.add_argument("--gap", type=float, default=GAP_SECONDS,
                   help="a pause between two frames longer than this, in seconds, ends an immediate segment and "
                        "separates runs (default: %(default)s)")
    p.add_argument("--clock", choices=("stamps", "frames"), default="stamps",
                   help="time axis: the frames' stamps (live time), or frame number * --frame-ms (time in the "
                        "audio of one stream, whatever its pace) (default: %(default)s)")
    p.add_argument("--frame-ms", type=float, default=FRAME_MS,
                   help="how long a frame lasts (default: %(default)s, the frames clients stream)")
    p.add_argument("--threshold", type=float, help="draw the speaker threshold on the score axis")
    p.add_argument("--size", type=parse_size, default=SIZE, help="PNG size in pixels (default: 1200x700)")
    a = p.parse_args(argv)
    if a.frame_ms <= 0 or a.gap <= 0:
        p.error("--frame-ms and --gap must be positive")
    if a.out is None and a.rttm is None and not a.summary:
        a.out = log_path(a).with_suffix(".png") if a.log != "-" else Path(f"{a.account}.png")
    return a


def log_path(a: argparse.Namespace) -> Path:
    return Path(a.log) if a.log is not None else a.log_dir / f"{a.account}.txt"


def segments_path(a: argparse.Namespace) -> Path | None:
    """--segments, else the file beside the log (LOG.txt -> LOG.segments.txt); None for a log on stdin."""
    if a.segments is not None:
        return Path(a.segments)
    if a.log == "-":
        return None
    log = log_path(a)
    return log.with_name(log.name.removesuffix(".txt") + SEGMENTS_SUFFIX)


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

    finals: Finals | None = None
    path = segments_path(a)
    missing = "no segments file: the log is read from stdin; pass --segments" if path is None else ""
    if path is not None and not path.exists():
        missing = f"no segments file {path}: an older worker, or VAD only"
    elif path is not None:
        try:
            finals = read_finals(path, frames, frame_seconds, a.clock)
        except OSError as exc:
            print(f"{PROG}: cannot read the segments file of {a.account}: {exc}", file=sys.stderr)
            return 2
        if finals.skipped:
            print(f"{PROG}: skipped {finals.skipped} line(s) of {path} that are not segment lines", file=sys.stderr)
        if finals.left_out:
            print(f"{PROG}: left out {finals.left_out} segment(s) of {path} whose first frame is not among the "
                  f"frames read (other runs)", file=sys.stderr)
        if a.clock == "frames" and len(finals.streams) > 1:
            print(f"{PROG}: final segments of {len(finals.streams)} streams: --clock frames places each from "
                  f"where the log has its first segment", file=sys.stderr)
        if not finals.segments:
            missing = f"no segment of {path} is of the frames read"
    labels = a.labels
    if labels == FINAL and finals is None:
        print(f"{PROG}: --labels final: {missing}", file=sys.stderr)
        return 2
    if labels is None:
        labels = FINAL if finals is not None and finals.segments else IMMEDIATE
        if labels == IMMEDIATE:
            print(f"{PROG}: speaker turns from the immediate labels of the frame log ({missing})", file=sys.stderr)
    turns = finals.segments if labels == FINAL and finals is not None else segs

    if a.summary:
        print(summary(a.account, frames, segs, finals, missing))
    if a.rttm is not None:
        text = "".join(line + "\n" for line in rttm_lines(a.account, turns, a.keep_unknown))
        if a.rttm == "-":
            sys.stdout.write(text)
        else:
            Path(a.rttm).write_text(text)
    if a.out is not None:
        draw(a.account, frames, segs, a.out, a.threshold, a.size, finals.segments if finals is not None else None,
             f"no final labels ({missing})" if missing else "no final labels")
        print(f"timeline of {a.account}: {a.out}", file=sys.stderr if a.rttm == "-" else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
