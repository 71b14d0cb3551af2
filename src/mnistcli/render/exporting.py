"""`mnist export`'s result: the file written and its parity with torch, as a short table or one JSON object."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from mnistcli.render.console import json_line, markup, out


def export_summary(report: Any) -> None:
    """A short table on stdout: the file, its size and format, what it takes and gives, and its parity."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a path is folded onto more lines, never cut
    table.add_row("file", markup(report.path))
    table.add_row("format", report.format)
    table.add_row("size", f"{report.size_bytes / 1024:,.1f} KiB")
    table.add_row("run", f"{markup(report.run.name)} ({markup(report.run.model)}, {markup(report.run.family)})")
    table.add_row("inputs", ", ".join(report.inputs) + "  (batch axis dynamic)")
    table.add_row("outputs", ", ".join(report.outputs))
    table.add_row("parity", _parity(report))
    out.print(table)


def _parity(report: Any) -> str:
    """'max |Δ| probability 3.0e-07, output 1.2e-06 on 300 MNIST test images (tolerance 1e-04)'."""
    what = (
        f"probability {report.max_probability_diff:.1e}, output {report.max_output_diff:.1e}"
        if report.max_probability_diff is not None
        else f"embedding {report.max_output_diff:.1e}"
    )
    data = report.data if report.compared_unit == "images" else f"{report.compared_unit} of {report.data}"
    return f"[green]ok[/green]: max |Δ| {what} on {report.compared} {markup(data)} (tolerance {report.tolerance:.0e})"


def export_json(report: Any) -> None:
    """One JSON object on stdout."""
    json_line(
        {
            "run": report.run.name,
            "model": report.run.model,
            "family": report.run.family,
            "path": report.path,
            "format": report.format,
            "size_bytes": report.size_bytes,
            "inputs": report.inputs,
            "outputs": report.outputs,
            "metadata": report.metadata,
            "parity": {
                "compared": report.compared,
                "unit": report.compared_unit,
                "data": report.data,
                "max_output_diff": report.max_output_diff,
                "max_probability_diff": report.max_probability_diff,
                "tolerance": report.tolerance,
            },
            "seconds": round(report.seconds, 3),
        }
    )
