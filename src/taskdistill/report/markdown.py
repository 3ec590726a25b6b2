"""Markdown tables of run results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; cells are str()-ed."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _speed(r: dict[str, Any]) -> list[str]:
    lat = r.get("latency")
    gflops = "-" if r.get("gflops") is None else f"{r['gflops']:.3f}"
    if not lat:
        return [gflops, "-", "-"]
    return [gflops, f"{lat['p50_ms']:.2f} / {lat['p95_ms']:.2f}", f"{lat['throughput']:,.0f}"]


def speed_note(rows: Sequence[dict[str, Any]]) -> str | None:
    """One sentence on what the student buys over the teacher (size, compute, measured latency), or None."""
    by = {r["stage"]: r for r in rows}
    t, s = by.get("teacher"), by.get("student")
    if not t or not s or not t.get("latency") or not s.get("latency") or not t.get("gflops") or not s.get("gflops"):
        return None
    speed = t["latency"]["p50_ms"] / max(s["latency"]["p50_ms"], 1e-9)
    flops = t["gflops"] / max(s["gflops"], 1e-12)
    size = t["params"] / max(s["params"], 1)
    note = (f"The student needs {flops:.1f}x fewer FLOPs than the teacher and answers a single image "
            f"{speed:.1f}x faster (p50 {s['latency']['p50_ms']:.2f} vs {t['latency']['p50_ms']:.2f} ms, measured "
            f"here); it has {s['params'] / 1e6:.2f} M parameters against the teacher's {t['params'] / 1e6:.2f} M")
    if size < 1.5:
        note += (" (not fewer: its gain is compute at a smaller input size, not weights; pick a narrower student, "
                 "e.g. --set student.model.name=mobilenetv3_small_050, when the model file's size matters)")
    return note + "."


def run_report(name: str, data_summary: dict[str, int], rows: list[dict[str, Any]], skipped: list[str]) -> str:
    """report.md of a run: one row per model (`what`, `model`, `params`, `top1`, `macro`, `seconds`, and
    `gflops` / `latency` where measured)."""
    table = markdown_table(
        ["model", "architecture", "params (M)", "top-1 %", "macro acc %", "train s", "GFLOPs",
         "batch-1 ms p50 / p95", "img/s"],
        [[r["what"], r["model"], f"{r['params'] / 1e6:.2f}", fmt_pct(r["top1"]), fmt_pct(r["macro"]),
          f"{r['seconds']:.0f}", *_speed(r)] for r in rows],
    )
    data = ", ".join(f"{k}: {v}" for k, v in data_summary.items())
    out = [f"# Run `{name}`", "", f"Data: {data}.", "", table, ""]
    note = speed_note(rows)
    if note:
        out += [note, ""]
    if skipped:
        out += [f"{len(skipped)} unreadable image(s) were skipped:", ""] + [f"- `{p}`" for p in skipped[:50]] + [""]
    return "\n".join(out)
