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


def run_report(name: str, data_summary: dict[str, int], rows: list[dict[str, Any]], skipped: list[str]) -> str:
    """report.md of a run: one row per model (`what`, `model`, `params`, `top1`, `macro`, `seconds`)."""
    table = markdown_table(
        ["model", "architecture", "params (M)", "top-1 %", "macro acc %", "train s"],
        [[r["what"], r["model"], f"{r['params'] / 1e6:.2f}", fmt_pct(r["top1"]), fmt_pct(r["macro"]),
          f"{r['seconds']:.0f}"] for r in rows],
    )
    data = ", ".join(f"{k}: {v}" for k, v in data_summary.items())
    out = [f"# Run `{name}`", "", f"Data: {data}.", "", table, ""]
    if skipped:
        out += [f"{len(skipped)} unreadable image(s) were skipped:", ""] + [f"- `{p}`" for p in skipped[:50]] + [""]
    return "\n".join(out)
