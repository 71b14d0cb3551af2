"""Results on the user's images: `predict`, `embed` and `oneshot` (tables for people, TSV/CSV/JSON for pipes)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from mnistcli.render.console import bar, error, fitting, is_terminal, json_line, markup, note, out, pct, shown, sparkbar


def answered_by(run: Any) -> dict[str, str]:
    """What answered, on every JSON line: the checkpoint (run name) and its model, so a pipeline can tell."""
    return {"checkpoint": run.name, "model": run.model}


def payload(result: Any, run: Any, rename: Mapping[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """One result as a JSON line's object: its fields in order (`rename`d in place), `extra` values replacing
    or following them, then what answered (`answered_by`)."""
    fields = {(rename or {}).get(k, k): v for k, v in asdict(result).items()}
    return {**fields, **extra, **answered_by(run)}


def answers(results: list[Any]) -> list[Any]:
    """Say each `Failure` among `results` on stderr, in order; return the rest (the answers)."""
    for item in results:
        if hasattr(item, "error"):
            error(item.error)
    return [r for r in results if not hasattr(r, "error")]


def predictions(report: Any, as_json: bool) -> None:
    """Predictions on stdout (JSON lines, a table on a terminal, else TSV); failures on stderr."""
    ok = answers(report.results)
    if ok and hasattr(ok[0], "sum"):
        _sums(report, ok, as_json)
        return
    if ok and hasattr(ok[0], "attention"):
        _bags(report, ok, as_json)
        return
    if as_json:
        for r in ok:
            json_line(payload(r, report.run))
    elif not is_terminal():
        for r in ok:
            sys.stdout.write(f"{shown(r.path)}\t{r.digit}\t{r.confidence:.4f}\n")
    elif len(ok) == 1:
        r = ok[0]
        out.print(
            f"[bold]{markup(r.path)}[/]: [bold green]{r.digit}[/] ({pct(r.confidence)})  [dim]{markup(report.run.name)}[/]"
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
        table = Table(title=f"predictions of {markup(report.run.name)}", title_justify="left")
        table.add_column("image")
        table.add_column("digit", justify="right", style="bold green")
        table.add_column("confidence", justify="right")
        table.add_column("0123456789", no_wrap=True)
        for r in ok:
            style = "green" if r.confidence >= 0.9 else "yellow" if r.confidence >= 0.5 else "red"
            table.add_row(
                Text(shown(r.path)),
                str(r.digit),
                Text(pct(r.confidence), style=style),
                Text(sparkbar(r.probabilities), style="cyan"),
            )
        out.print(table)


def shown_inputs(written: list[str], folder: str) -> None:
    """Say on stderr where `--show-input` put the pictures the model saw."""
    if not written:
        note(f"--show-input: no readable image, nothing written to {folder}")
    elif len(written) == 1:
        note(f"wrote the 28x28 picture the model saw to {written[0]}")
    else:
        note(f"wrote the 28x28 pictures the model saw ({len(written)}) to {folder}")


def _sums(report: Any, ok: list[Any], as_json: bool) -> None:
    """An adder's answers: JSON lines, TSV when piped, else a table."""
    if as_json:
        for r in ok:
            json_line(payload(r, report.run, rename={"added": "add"}))
    elif not is_terminal():
        for r in ok:
            sys.stdout.write(f"{shown(r.path)}\t{r.digit}\t{r.digit_confidence:.4f}\t{r.sum}\t{r.sum_confidence:.4f}\n")
    else:
        table = Table(title=f"{markup(report.run.name)}: digit + {ok[0].added}", title_justify="left")
        table.add_column("image")
        table.add_column("digit", justify="right", style="bold green")
        table.add_column("confidence", justify="right")
        table.add_column("sum", justify="right", style="bold green")
        table.add_column("confidence", justify="right")
        for r in ok:
            table.add_row(
                Text(shown(r.path)),
                str(r.digit),
                pct(r.digit_confidence),
                f"{r.digit} + {r.added} = {r.sum}" if r.sum == r.digit + r.added else str(r.sum),
                pct(r.sum_confidence),
            )
        out.print(table)


def _bags(report: Any, ok: list[Any], as_json: bool) -> None:
    """Multiple-instance answers: a JSON line per bag, TSV rows (bag, probability, image, attention) when piped,
    else a heading and a table of attention per bag. Files a folder held that are not images: a note each bag."""
    for r in ok:
        if r.ignored:
            names = ", ".join(Path(p).name for p in r.ignored[:3]) + (", ..." if len(r.ignored) > 3 else "")
            what = "files that are not images" if len(r.ignored) > 1 else "file that is not an image"
            note(f"{r.bag}: left out {len(r.ignored)} {what} ({names})")
    if as_json:
        for r in ok:
            json_line(payload(r, report.run))
    elif not is_terminal():
        for r in ok:
            for path, weight in zip(r.paths, r.attention, strict=True):
                bag = "-" if r.bag is None else shown(r.bag)
                sys.stdout.write(f"{bag}\t{r.probability:.4f}\t{shown(path)}\t{weight:.4f}\n")
    else:
        for r in ok:
            _bag_table(r, report.run.name)


def _bag_table(r: Any, run_name: str) -> None:
    """One bag on a terminal: its verdict and probability, then each image with its attention (the top one starred)."""
    name = markup(r.bag) if r.bag is not None else f"{len(r.paths)} loose file{'s' if len(r.paths) > 1 else ''}"
    if r.positive:
        verdict = f"[bold green]positive[/], holds a {r.target} (probability {pct(r.probability)})"
    else:
        verdict = f"[bold]negative[/], holds no {r.target} (probability of a {r.target}: {pct(r.probability)})"
    out.print(f"[bold]{name}[/]: {verdict}  [dim]{markup(run_name)}[/]")
    table = Table(show_header=True, title_justify="left")
    table.add_column("image", no_wrap=True)
    table.add_column("attention", justify="right")
    table.add_column("", no_wrap=True)
    for k, (path, weight) in enumerate(zip(r.paths, r.attention, strict=True)):
        top = k == r.top
        label = shown(Path(path).name if r.bag is not None else path)
        table.add_row(
            Text(label + ("  ★" if top else ""), style="bold" if top else ""),
            Text(f"{weight:.3f}", style="bold" if top else ""),
            Text(bar(weight, 20), style="bold green" if top and r.positive else "cyan"),
        )
    out.print(table)


def embeddings(report: Any, as_json: bool, written: str | None) -> None:
    """Embeddings as JSON lines, CSV rows on a pipe, or a short table; failures on stderr."""
    for f in report.failures:
        error(f.error)
    if written:
        to = "standard output" if written == "-" else written
        note(f"wrote {len(report.paths)} embeddings of dimension {report.vectors.shape[1]} to {to}")
    if as_json:
        for path, row in zip(report.paths, report.vectors, strict=True):
            json_line({"path": path, "embedding": [round(float(v), 6) for v in row], **answered_by(report.run)})
    elif written:
        return
    elif not is_terminal():
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerows(
            [path, *(f"{v:.6g}" for v in row)] for path, row in zip(report.paths, report.vectors, strict=True)
        )
    elif report.paths:
        table = Table(
            title=f"embeddings from {markup(report.run.name)} (dimension {report.vectors.shape[1]})",
            title_justify="left",
        )
        table.add_column("image")
        table.add_column("norm", justify="right")
        table.add_column("first values")
        for path, row in zip(report.paths, report.vectors, strict=False):
            head = " ".join(f"{v:+.3f}" for v in row[:6])
            table.add_row(Text(shown(path)), f"{float((row**2).sum()) ** 0.5:.3f}", head + " ...")
        out.print(table)
        note("use --json, or --output FILE --format npy|csv, for the full vectors")


def oneshot_results(report: Any, as_json: bool) -> None:
    """One-shot answers on stdout (JSON lines, a table on a terminal, else TSV); failures on stderr."""
    for f in report.skipped:
        note(f"skipped a support image: {f.error}")
    ok = answers(report.results)
    if as_json:
        for r in ok:
            json_line(
                payload(
                    r,
                    report.run,
                    distance=round(r.distance, 6),
                    confidence=round(r.confidence, 6),
                    calibrated=report.calibrated,
                )
            )
    elif not is_terminal():
        for r in ok:
            sys.stdout.write(f"{shown(r.path)}\t{shown(r.label)}\t{r.distance:.4f}\t{r.confidence:.4f}\n")
    elif ok:
        _oneshot_table(report, ok)
    if not report.calibrated:
        note(
            f"confidences use a default scale ({report.scale:g}): only siamese runs trained with the labels of "
            "every digit are calibrated for one-shot"
        )


def _oneshot_table(report: Any, ok: list[Any]) -> None:
    support = ", ".join(f"{markup(label)} ({n})" for label, n in report.support.items())

    def make(dropped: set[str]) -> Table:
        # File names stay whole (`no_wrap`); the confidence bar gives way on a narrow terminal.
        table = Table(title=f"one-shot with {markup(report.run.name)}; support: {support}", title_justify="left")
        table.add_column("image", no_wrap="fold" not in dropped, overflow="fold")
        table.add_column("label", style="bold green")
        table.add_column("distance", justify="right")
        table.add_column("confidence", justify="right")
        if "bar" not in dropped:
            table.add_column("", no_wrap=True)
        for r in ok:
            style = "green" if r.confidence >= 0.9 else "yellow" if r.confidence >= 0.5 else "red"
            cells: list[Text | str] = [
                Text(shown(r.path)),
                Text(shown(r.label)),
                f"{r.distance:.3f}",
                Text(pct(r.confidence), style=style),
            ]
            table.add_row(*cells, *([bar(r.confidence, 20)] if "bar" not in dropped else []))
        return table

    out.print(fitting(make, ["bar", "fold"], out))
