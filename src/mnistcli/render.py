"""Everything the user sees: rich tables and bars for people, JSON lines and TSV for pipes.

Two consoles, as rich-cli does: results go to stdout, messages and progress to stderr, so
`mnist predict ... --json | jq` always works. Nothing here imports torch; values arrive as the
api's dataclasses.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
BLOCKS = " ▁▂▃▄▅▆▇█"


def error(message: str) -> None:
    """One red line on stderr."""
    err.print(Text.assemble(("error: ", "bold red"), (message, "red")), soft_wrap=True)


def note(message: str) -> None:
    """One dim line on stderr."""
    err.print(Text(message, style="dim"), soft_wrap=True)


def json_line(obj: Any) -> None:
    """One compact JSON object on stdout (never through rich, so no markup or wrapping)."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")


def is_terminal() -> bool:
    return sys.stdout.isatty()


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def sparkbar(values: Sequence[float]) -> str:
    """One block character per value in [0, 1]: a probability bar for every class in one cell."""
    return "".join(BLOCKS[min(len(BLOCKS) - 1, round(v * (len(BLOCKS) - 1)))] for v in values)


def bar(value: float, width: int = 30) -> str:
    full = value * width
    return "█" * int(full) + ("▌" if full - int(full) >= 0.5 else "")


def train_summary(report: Any) -> None:
    if not report.history:
        return
    last = report.history[-1]
    table = Table(
        title=f"trained {report.run.model} -> {escape(report.run.name)}", show_header=False, title_justify="left"
    )
    table.add_column(style="bold")
    table.add_column()
    contrastive = report.run.task == "contrastive"
    table.add_row(
        "linear evaluation (test)" if contrastive else "test accuracy",
        f"[bold green]{pct(report.test_accuracy)}[/]  (loss {report.test_loss:.4f})",
    )
    table.add_row("epochs", f"{len(report.history)}" + ("  (stopped early)" if report.stopped_early else ""))
    if report.target:
        t = report.target
        reached = (
            f"[bold green]reached[/] {pct(t['accuracy'])} on the {t['checked_on']} set after {t['epochs']:.2f} epochs, {t['seconds']:.1f} s"
            if t["reached"]
            else f"[bold red]not reached[/] on the {t['checked_on']} set in {len(report.history)} epochs"
        )
        table.add_row(f"target {pct(t['target'])}", reached)
    kind = "pair accuracy (a view's nearest view is its pair)" if contrastive else "accuracy"
    table.add_row(f"final train {kind}", pct(last["train_accuracy"]))
    if last.get("val_accuracy") is not None:
        table.add_row(f"final val {kind}", pct(last["val_accuracy"]))
    table.add_row("time", f"{report.seconds:.1f} s training, {report.total_seconds:.1f} s in all, on {report.device}")
    table.add_row("checkpoint", Text(str(report.run.path)))
    err.print(table)


def train_json(report: Any) -> None:
    json_line(
        {
            "run": report.run.name,
            "model": report.run.model,
            "path": str(report.run.path),
            "test_accuracy": report.test_accuracy,
            "test_loss": report.test_loss,
            "seconds": round(report.seconds, 3),
            "total_seconds": round(report.total_seconds, 3),
            "epochs": len(report.history),
            "stopped_early": report.stopped_early,
            "target": report.target,
            "config": report.config.to_dict(),
            "history": report.history,
        }
    )


def eval_json(report: Any) -> None:
    json_line(
        {
            "checkpoint": report.run.name,
            "model": report.run.model,
            "accuracy": report.accuracy,
            "loss": report.loss,
            "total": report.total,
            "per_class": report.per_class,
            "confusion": report.confusion,
            "seconds": round(report.seconds, 4),
            "images_per_second": round(report.images_per_second, 1),
            "protocol": report.protocol,
            "labels_per_class": report.labels_per_class,
            "pixels_accuracy": report.pixels_accuracy,
        }
    )


def eval_report(report: Any) -> None:
    correct = sum(row["correct"] for row in report.per_class)
    out.print(f"[bold]{escape(report.run.name)}[/] ({report.run.model}{', bundled' if report.run.bundled else ''})")
    if report.protocol == "linear":
        labels = f"{report.labels_per_class} labels per digit" if report.labels_per_class else "all training labels"
        out.print(
            f"linear evaluation (frozen encoder, probe trained on {labels}): test accuracy [bold green]"
            f"{pct(report.accuracy)}[/] ({correct:,}/{report.total:,}); the same probe on raw pixels: "
            f"{pct(report.pixels_accuracy)}  [dim]{report.seconds:.1f} s on {report.device}[/]"
        )
    else:
        out.print(
            f"test accuracy [bold green]{pct(report.accuracy)}[/] ({correct:,}/{report.total:,}), loss {report.loss:.4f}"
            f"  [dim]{report.seconds:.2f} s, {report.images_per_second:,.0f} images/s on {report.device}[/]"
        )
    per_class = Table(title="per class", title_justify="left")
    for col in ("digit", "correct", "total", "accuracy"):
        per_class.add_column(col, justify="right")
    for row in report.per_class:
        per_class.add_row(
            str(row["digit"]),
            f"{row['correct']:,}",
            f"{row['total']:,}",
            pct(row["accuracy"]),
        )
    out.print(per_class)
    out.print(confusion_table(report.confusion))


def confusion_table(confusion: list[list[int]]) -> Table:
    """The confusion matrix, rows true and columns predicted, mistakes shaded by count."""
    table = Table(title="confusion (rows: true, columns: predicted)", title_justify="left")
    table.add_column("", style="bold", justify="right")
    for d in range(len(confusion)):
        table.add_column(str(d), justify="right")
    worst = max((v for i, row in enumerate(confusion) for j, v in enumerate(row) if i != j), default=0) or 1
    for i, row in enumerate(confusion):
        cells = []
        for j, v in enumerate(row):
            if i == j:
                cells.append(Text(str(v), style="bold green"))
            elif v:
                cells.append(
                    Text(str(v), style="bold red" if v / worst > 0.5 else "red" if v / worst > 0.2 else "yellow")
                )
            else:
                cells.append(Text("·", style="dim"))
        table.add_row(str(i), *cells)
    return table


def predictions(report: Any, as_json: bool) -> None:
    """Predictions on stdout (JSON lines, a table on a terminal, else TSV); failures on stderr."""
    for item in report.results:
        if not hasattr(item, "digit"):
            error(item.error)
    ok = [r for r in report.results if hasattr(r, "digit")]
    if as_json:
        for r in ok:
            json_line({"path": r.path, "digit": r.digit, "confidence": r.confidence, "probabilities": r.probabilities})
    elif not is_terminal():
        for r in ok:
            sys.stdout.write(f"{r.path}\t{r.digit}\t{r.confidence:.4f}\n")
    elif len(ok) == 1:
        r = ok[0]
        out.print(
            f"[bold]{escape(r.path)}[/]: [bold green]{r.digit}[/] ({pct(r.confidence)})  [dim]{escape(report.run.name)}[/]"
        )
        table = Table(show_header=True)
        table.add_column("digit", justify="right")
        table.add_column("probability", justify="right")
        table.add_column("")
        for d, p in enumerate(r.probabilities):
            style = "bold green" if d == r.digit else "cyan"
            table.add_row(str(d), pct(p), Text(bar(p), style=style))
        out.print(table)
    elif ok:
        table = Table(title=f"predictions of {escape(report.run.name)}", title_justify="left")
        table.add_column("image")
        table.add_column("digit", justify="right", style="bold green")
        table.add_column("confidence", justify="right")
        table.add_column("0123456789", no_wrap=True)
        for r in ok:
            style = "green" if r.confidence >= 0.9 else "yellow" if r.confidence >= 0.5 else "red"
            table.add_row(
                Text(r.path),
                str(r.digit),
                Text(pct(r.confidence), style=style),
                Text(sparkbar(r.probabilities), style="cyan"),
            )
        out.print(table)


def embeddings(report: Any, as_json: bool, written: str | None) -> None:
    """Embeddings as JSON lines, CSV rows on a pipe, or a short table; failures on stderr."""
    for f in report.failures:
        error(f.error)
    if written:
        note(f"wrote {len(report.paths)} embeddings of dimension {report.vectors.shape[1]} to {written}")
    if as_json:
        for path, row in zip(report.paths, report.vectors, strict=True):
            json_line({"path": path, "embedding": [round(float(v), 6) for v in row]})
    elif written:
        return
    elif not is_terminal():
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerows(
            [path, *(f"{v:.6g}" for v in row)] for path, row in zip(report.paths, report.vectors, strict=True)
        )
    elif report.paths:
        table = Table(
            title=f"embeddings from {escape(report.run.name)} (dimension {report.vectors.shape[1]})",
            title_justify="left",
        )
        table.add_column("image")
        table.add_column("norm", justify="right")
        table.add_column("first values")
        for path, row in zip(report.paths, report.vectors, strict=False):
            head = " ".join(f"{v:+.3f}" for v in row[:6])
            table.add_row(Text(path), f"{float((row**2).sum()) ** 0.5:.3f}", head + " ...")
        out.print(table)
        note("use --json, or --output FILE --format npy|csv, for the full vectors")


def models_table(infos: Sequence[Any], as_json: bool) -> None:
    if as_json:
        for m in infos:
            json_line(
                {"name": m.name, "task": m.task, "description": m.description, "params": m.params, "recipe": m.recipe}
            )
        return
    table = Table(title="models", title_justify="left")
    for col, just in (("name", "left"), ("task", "left"), ("params", "right"), ("description", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for m in infos:
        table.add_row(f"[bold]{m.name}[/]", m.task, f"{m.params:,}", m.description)
    out.print(table)


def checkpoints_table(runs: Sequence[Any], as_json: bool) -> None:
    if as_json:
        for r in runs:
            json_line(
                {
                    "name": r.name,
                    "model": r.model,
                    "task": r.task,
                    "test_accuracy": r.test_accuracy,
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
    table = Table(title="checkpoints (newest last)", title_justify="left")
    for col, just in (
        ("name", "left"),
        ("model", "left"),
        ("accuracy", "right"),
        ("created", "left"),
        ("size", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in runs:
        name = f"{escape(r.name)} [dim](bundled)[/]" if r.bundled else f"[bold]{escape(r.name)}[/]"
        table.add_row(
            name, r.model, pct(r.test_accuracy), r.created.replace("T", " ")[:19], f"{r.size_bytes / 1024:,.0f} KiB"
        )
    out.print(table)
