"""What a run shows: one line per level as it ends, the tables at the end,
and the latency-vs-N PNG."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

TABLE_HEAD = ("N", "frames/s", "target", "e2e p50", "p95", "p99", "max", "model p50", "p99",
              "send lag p99", "errors", "lost", "late", "behind", "busiest worker", "CPU ms/frame", "x floor",
              "machine CPU%",
              "other CPU%", "probe ms", "held")
PROCESS_TABLE_TITLE = "CPU% of one core / peak RSS MB (during the level; VmHWM in brackets)"
COMPARISON_HEAD = ("N", "runs", "first", "CPU ms/frame embedded", "PG served", "PG server", "PG/emb",
                   "PG+server/emb", "p99 embedded", "p99 PG", "rows/answered", "PG/emb per pair")


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def level_line(level: dict) -> str:
    """The level in one line, printed as soon as it ends."""
    e = level["e2e_ms"]
    verdict = "held" if level["held"] else "did not hold: " + "; ".join(level["reasons"])
    return (f"  {level['frames_per_s']:.0f} frames/s (target {level['target_frames_per_s']}), "
            f"e2e p50/p95/p99 {fmt(e['p50'])}/{fmt(e['p95'])}/{fmt(e['p99'])} ms, "
            f"model p50 {fmt(level['model_ms']['p50'], 2)} ms, errors {level['errors']}, late {level['late']}, "
            f"CPU probe {level['cpu_probe_ms'][0]:.1f}/{level['cpu_probe_ms'][1]:.1f} ms{rows_note(level)} "
            f"-> {verdict}")


def rows_note(level: dict) -> str:
    rows = level.get("frame_rows")
    return "" if rows is None else f", database rows {rows['rows']}/{rows['answered']} answered"


def level_row(lv: dict) -> tuple[str, ...]:
    e, m = lv["e2e_ms"], lv["model_ms"]
    return (str(lv["n"]), fmt(lv["frames_per_s"]), str(lv["target_frames_per_s"]),
            fmt(e["p50"]), fmt(e["p95"]), fmt(e["p99"]), fmt(e["max"]), fmt(m["p50"], 2), fmt(m["p99"], 2),
            fmt(lv["client_send_lag_ms"]["p99"]), str(lv["errors"]), str(lv["lost"]), str(lv["late"]),
            str(lv["behind_streams"]),
            f"{lv['busiest_worker_share']:.0%}" if lv.get("busiest_worker_share") else "-",
            fmt(lv["system_cpu_ms_per_frame"], 2), fmt(lv.get("cpu_over_floor"), 2), fmt(lv["machine_cpu_pct"]),
            fmt(lv["other_cpu_pct"], 0),
            "/".join(f"{v:.1f}" for v in lv.get("cpu_probe_ms", [])) or "-", "yes" if lv["held"] else "NO")


def format_table(levels: Sequence[dict]) -> str:
    """One row per level by N; below it, when processes were measured, their table."""
    table = align([TABLE_HEAD, *(level_row(lv) for lv in sorted(levels, key=lambda lv: lv["n"]))])
    process_rows = format_process_table(levels)
    return table + (f"\n\n{PROCESS_TABLE_TITLE}\n{process_rows}" if process_rows else "")


def process_cell(p: dict | None) -> str:
    if p is None:
        return "-"
    cell = f"{fmt(p.get('cpu_pct'), 0)}%"
    if "rss_peak_mb" in p:  # a process tree (the database server) has none: shared memory repeats in each
        cell += f" {p['rss_peak_mb']:.0f}"
    if "hwm_mb" in p:
        cell += f" [{p['hwm_mb']:.0f}]"
    return cell + (" gone" if p.get("gone") else "")


def format_process_table(levels: Sequence[dict]) -> str:
    names: list[str] = []
    for lv in levels:
        names += [name for name in lv["processes"] if name not in names]
    if not names:
        return ""
    rows: list[tuple[str, ...]] = [("N", *names)]
    for lv in sorted(levels, key=lambda lv: lv["n"]):
        rows.append((str(lv["n"]), *(process_cell(lv["processes"].get(name)) for name in names)))
    return align(rows)


def comparison_row(c: dict) -> tuple[str, ...]:
    rows = "-" if c["rows"] is None and c["answered"] is None else f"{c['rows']}/{c['answered']}"
    if c["rows_error"]:
        rows += " MISMATCH"
    return (str(c["n"]), str(c["runs"]), c["first"], fmt(c["embedded_cpu_ms_per_frame"], 3),
            fmt(c["postgresql_cpu_ms_per_frame"], 3), fmt(c["database_server_cpu_ms_per_frame"], 3),
            fmt(c["cpu_ratio"], 3), fmt(c["cpu_ratio_with_server"], 3), fmt(c["embedded_e2e_p99_ms"]),
            fmt(c["postgresql_e2e_p99_ms"]), rows, ",".join(fmt(r, 3) for r in c["pair_ratios"]) or "-")


def format_comparison(rows: Sequence[dict]) -> str:
    """One row per N: CPU ms per frame of the served system (balancer +
    workers) on each store, PostgreSQL's own server CPU per frame, the ratios
    PG / embedded without and with it, e2e p99 of both (medians over the
    runs), the row check, and the ratio of each pair of runs."""
    return align([COMPARISON_HEAD, *(comparison_row(c) for c in sorted(rows, key=lambda c: c["n"]))])


def align(rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _or_nan(value: float | None) -> float:
    return np.nan if value is None else value


def write_plot(levels: Sequence[dict], path: Path, title: str, bound_ms: float) -> None:
    """Latency percentiles and model time against N (log scale), the bound,
    and the levels that did not hold circled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(levels, key=lambda lv: lv["n"])
    ns = [lv["n"] for lv in ordered]
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label, style in (("p50", "e2e p50", "o-"), ("p95", "e2e p95", "s--"), ("p99", "e2e p99", "^-")):
        ax.plot(ns, [_or_nan(lv["e2e_ms"][key]) for lv in ordered], style, label=label)
    ax.plot(ns, [_or_nan(lv["model_ms"]["p50"]) for lv in ordered], "x:", label="model p50")
    ax.axhline(bound_ms, color="red", linewidth=0.8, linestyle="--", label=f"p99 bound {bound_ms:g} ms")
    failed = [lv for lv in ordered if not lv["held"]]
    if failed:
        ax.scatter([lv["n"] for lv in failed],
                   [lv["e2e_ms"]["p99"] if lv["e2e_ms"]["p99"] is not None else bound_ms for lv in failed],
                   s=120, facecolors="none", edgecolors="red", label="did not hold")
    ax.set_xlabel("concurrent real-time streams (N)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
