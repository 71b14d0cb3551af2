"""`mnist models` and `mnist checkpoints` tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from mnistcli.render.console import err, fitting, json_line, markup, note, out, pct, shown


def _model_json(m: Any) -> dict[str, Any]:
    return {
        "name": m.name,
        "family": m.family,
        "description": m.description,
        "params": m.params,
        "args": m.args,
        "recipe": m.recipe,
    }


def models_table(infos: Sequence[Any], as_json: bool) -> None:
    if as_json:
        for m in infos:
            json_line(_model_json(m))
        return
    table = Table(title="models", title_justify="left")
    for col, just in (("name", "left"), ("family", "left"), ("params", "right"), ("description", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for m in infos:
        table.add_row(f"[bold]{m.name}[/]", m.family, f"{m.params:,}", m.description)
    out.print(table)


def model_card(m: Any, as_json: bool) -> None:
    """One model: its arguments with their defaults, and its training recipe (each value from the model or the default)."""
    if as_json:
        json_line({**_model_json(m), "config": m.config})
        return
    out.print(f"[bold]{markup(m.name)}[/] ({m.family}, {m.params:,} parameters): {markup(m.description)}")
    if m.args:
        args = Table(title="arguments (--arg KEY=VALUE)", title_justify="left", min_width=40)
        args.add_column("argument", style="bold")
        args.add_column("default")
        for key, value in m.args.items():
            args.add_row(key, markup(json.dumps(value)))
        out.print(args)
    else:
        out.print("[dim]no arguments (--arg)[/]")
    recipe = Table(title=f"training recipe (mnist train {markup(m.name)})", title_justify="left", min_width=40)
    recipe.add_column("option", style="bold")
    recipe.add_column("value")
    recipe.add_column("from", style="dim")
    for key, value in m.config.items():
        shown = "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        if key not in m.recipe:
            source = "default"
        elif m.recipe[key] == value:
            source = "model"
        else:  # adapted to the family's options (a bags model's epochs and attempts follow --bags)
            source = f"model ({m.recipe[key]}, for these options)"
        recipe.add_row("--" + key.replace("_", "-"), markup(shown), markup(source))
    out.print(recipe)


def test_number(run: Any) -> str:
    """A run's headline test number: a percentage, or for a ratio such as a MIL model's bag AUC, 'AUC 0.9712'."""
    measure = run.info.results.test_measure
    if run.test_accuracy is not None and measure.endswith("AUC"):
        return f"AUC {run.test_accuracy:.4f}"
    return pct(run.test_accuracy)


def checkpoints_table(runs: Sequence[Any], as_json: bool) -> None:
    if as_json:
        for r in runs:
            json_line(
                {
                    "name": r.name,
                    "model": r.model,
                    "family": r.family,
                    "test_accuracy": r.test_accuracy,
                    "test_measure": r.info.results.test_measure,
                    "created": r.created,
                    "size_bytes": r.size_bytes,
                    "path": str(r.path),
                    "bundled": r.bundled,
                }
            )
        return
    if not runs:
        note("no checkpoints yet: train one with `mnist train cnn`")
        return

    def make(dropped: set[str]) -> Table:
        # The name is what `-c` and `checkpoints rm` take: whole, on one line; size and date give way first.
        table = Table(title="checkpoints (newest last)", title_justify="left")
        table.add_column("name", no_wrap="fold" not in dropped, overflow="fold")
        columns = {
            "model": lambda r: markup(r.model),
            "accuracy": test_number,
            "created": lambda r: r.created.replace("T", " ")[:16],
            "size": lambda r: f"{r.size_bytes / 1024:,.0f} KiB",
        }
        columns = {k: v for k, v in columns.items() if k not in dropped}
        for col in columns:
            table.add_column(
                col,
                justify="right" if col in ("accuracy", "size") else "left",
                min_width=16 if col == "created" else None,
            )
        for r in runs:
            name = Text(shown(r.name), style="" if r.bundled else "bold")
            if r.bundled:
                name.append(" (bundled)", style="dim")
            table.add_row(name, *(cell(r) for cell in columns.values()))
        return table

    out.print(fitting(make, ["size", "created", "model", "fold"], out))


def plot_report(report: Any, as_json: bool) -> None:
    """Where each picture went (stderr), or one JSON object with the files."""
    for text in report.notes:
        note(text)
    if as_json:
        json_line({"files": [{"kind": kind, "path": path} for kind, path in report.files], "notes": report.notes})
        return
    for kind, path in report.files:
        err.print(Text.assemble(("wrote ", "dim"), (kind, "bold"), (" to ", "dim"), (shown(path), "")))
