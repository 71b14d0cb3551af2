"""`mnist read`'s output: a table of numbers and per-digit confidences for people, TSV or JSON lines for pipes."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

from rich.table import Table
from rich.text import Text

from mnistcli.render.console import is_terminal, json_line, markup, out, pct, shown
from mnistcli.render.predicting import answered_by, answers


def readings(report: Any, as_json: bool) -> None:
    """Numbers on stdout (JSON lines, a table on a terminal, else TSV: path, text, least confidence); failures on stderr."""
    ok = answers(report.results)
    if as_json:
        for r in ok:
            json_line(
                {
                    "path": r.path,
                    "text": r.text,
                    "confidence": round(r.confidence, 6),
                    "digits": [{**asdict(d), "confidence": round(d.confidence, 6)} for d in r.digits],
                    **answered_by(report.run),
                }
            )
    elif not is_terminal():
        for r in ok:
            sys.stdout.write(f"{shown(r.path)}\t{r.text}\t{r.confidence:.4f}\n")
    elif ok:
        table = Table(title=f"numbers read by {markup(report.run.name)}", title_justify="left")
        table.add_column("image")
        table.add_column("number", justify="right", style="bold green")
        table.add_column("least sure", justify="right")
        table.add_column("each digit")
        for r in ok:
            each = Text()
            for i, d in enumerate(r.digits):
                each.append(("  " if i else "") + f"{d.digit} ", style="bold")
                each.append(pct(d.confidence), style=_style(d.confidence))
            table.add_row(Text(shown(r.path)), r.text, Text(pct(r.confidence), style=_style(r.confidence)), each)
        out.print(table)


def _style(confidence: float) -> str:
    return "green" if confidence >= 0.9 else "yellow" if confidence >= 0.5 else "red"
