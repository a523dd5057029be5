"""The benchmark's report: a Markdown table (bench/report.md) and a plot of the latency
distributions, warmwire against its baseline (a PNG next to the JSON)."""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from .stats import Row  # noqa: E402

REPORT = Path(__file__).resolve().parent / "report.md"
PLOT_DPI = 110
PANEL_SIZE = (5.0, 3.4)
PANEL_COLUMNS = 3


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def write_markdown(rows: list[Row], machine: dict, seconds: float, quick: bool, plot: str | None) -> Path:
    lines = [
        "# warmwire benchmark",
        "",
        f"Taken {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine['cpus']} CPUs "
        f"({machine['cpu']}), {machine['memory_gb']} GB, Python {machine['python']}, load average "
        f"{', '.join(f'{x:.2f}' for x in machine['load_avg'])} at the start; "
        f"{'quick' if quick else 'full'} run of {seconds:.0f} s. `./run.sh bench` made this file.",
        "",
        "| row | unit | p50 | p99 | baseline p50 | baseline p99 | ratio | target | met |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row.name} | {row.unit} | {_cell(row.p50)} | {_cell(row.p99)} | "
                     f"{_cell(row.baseline_p50)} | {_cell(row.baseline_p99)} | {_cell(row.ratio)}× | "
                     f"{row.target} | {'yes' if row.met else '**no**'} |")
    lines += growth_tables(rows)
    lines += ["", "## Notes per row", ""]
    lines += [f"- **{row.name}**: {row.note}" for row in rows if row.note]
    missed = [row for row in rows if not row.met]
    lines += ["", "## Targets not met", ""]
    lines += ([f"- **{row.name}**: measured p50 {_cell(row.p50)} / p99 {_cell(row.p99)} {row.unit}; "
               f"target {row.target}." for row in missed] or ["None."])
    if plot:
        lines += ["", f"Latency distributions: `{plot}`."]
    REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return REPORT


GROWTH = (("inline_clients_", "Inline messages by concurrent clients", "clients"),
          ("search_uncached_", "Uncached search by notes", "notes"),
          ("pool_acquire_burst_", "Acquisition by burst of new chats", "burst"))


def growth_tables(rows: list[Row]) -> list[str]:
    """How cost grows: one small table per family of rows measured at several sizes."""
    lines = ["", "## How cost grows", ""]
    for prefix, title, size in GROWTH:
        family = [row for row in rows if row.name.startswith(prefix)]
        if not family:
            continue
        lines += [f"**{title}**", "", f"| {size} | value | unit | latency p50 | latency p99 | met |", "|---:|---:|---|---:|---:|---|"]
        for row in family:
            p50 = row.details.get("latency_p50_ms", row.p50 if row.unit == "ms" else None)
            p99 = row.details.get("latency_p99_ms", row.p99 if row.unit == "ms" else None)
            lines.append(f"| {row.name[len(prefix):]} | {_cell(row.p50)} | {row.unit} | {_cell(p50)} | {_cell(p99)} | "
                         f"{'yes' if row.met else '**no**'} |")
        lines.append("")
    memory = next((row for row in rows if row.name == "memory_per_agent"), None)
    if memory:
        lines.append(f"Memory per agent: p50 {_cell(memory.p50)} / p99 {_cell(memory.p99)} MiB over "
                     f"{memory.samples} agents. CPU per 1,000 inline messages: " + ", ".join(
                         f"{row.name[len('inline_clients_'):]} clients {row.details.get('cpu_s_per_1000', 0):.2f} s"
                         for row in rows if row.name.startswith("inline_clients_")) + ".")
    return lines


def write_plot(rows: list[Row], path: Path) -> Path | None:
    """One panel per row with raw samples: the share of requests done within a time."""
    plotted = [row for row in rows if row.distribution or row.baseline_distribution]
    if not plotted:
        return None
    columns = min(PANEL_COLUMNS, len(plotted))
    lines = -(-len(plotted) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * lines),
                                squeeze=False)
    for axis in axes.flat[len(plotted):]:
        axis.set_visible(False)
    for axis, row in zip(axes.flat, plotted):
        for label, samples in (("warmwire", row.distribution), ("baseline", row.baseline_distribution)):
            if samples:
                ordered = sorted(samples)
                axis.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post",
                          label=f"{label} (n={len(ordered)})")
        axis.set_xscale("log")
        axis.set_xlabel(row.distribution_unit or row.unit)
        axis.set_ylabel("share done")
        axis.set_title(row.name if row.distribution else f"{row.name} (baseline only: warmwire's side is "
                       "measured in the service)", fontsize="small" if not row.distribution else None)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=PLOT_DPI)
    plt.close(figure)
    return path
