"""The end of `mnist train`: a summary table on stderr, and JSON on stdout with --json."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table
from rich.text import Text

from mnistcli.render.console import BLOCKS, err, json_line, markup, pct, shown


def measure(value: float, unit: str) -> str:
    """A test number as a percentage ("%") or, for a ratio such as an AUC (""), with four decimals."""
    return pct(value) if unit == "%" else f"{value:.4f}"


def _numbers(attempts: list[int]) -> str:
    """[1, 2, 3] -> 'attempts 1, 2 and 3'."""
    words = [str(n) for n in attempts]
    return "attempts " + (", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words))


def train_summary(report: Any) -> None:
    if not report.history:
        return
    last = report.history[-1]
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    headline = report.test_label
    loss = f"  (loss {report.test_loss:.4f})" if report.test_loss is not None else ""
    table.add_row(headline, f"[bold green]{measure(report.test_accuracy, report.test_unit)}[/]{loss}")
    for key, value in report.test_extra.items():  # further test numbers of the family (adder: digit_accuracy)
        unit = "" if key.endswith("auc") else "%"
        table.add_row(f"test {key.replace('_', ' ').replace('auc', 'AUC')}", f"[bold green]{measure(value, unit)}[/]")
    table.add_row("epochs", f"{len(report.history)}" + ("  (stopped early)" if report.stopped_early else ""))
    if report.restarts:
        losses = ", ".join(f"{r['train_loss']:.3f} in epoch {r['epoch']}" for r in report.restarts)
        table.add_row("restarts", f"{len(report.restarts)}  (loss {losses}: started over)")
    if report.attempts:
        kept, losses = report.attempts["kept"], report.attempts["losses"]
        each = ", ".join(f"{loss:.3f}" for loss in losses)
        members = report.attempts.get("members", [])
        kept_what = (
            f"{_numbers(members)} averaged; the curve is attempt {kept}'s"
            if report.attempts.get("combined") == "mean"
            else f"kept attempt {kept}"
            + (
                " alone: --keep mean averages the attempts that fitted their bags, and no other did"
                if members == [kept]
                else ""
            )
        )
        extra = report.attempts.get("extra", 0)
        beyond = f"; {extra} more because none of the first {len(losses) - extra} fitted" if extra else ""
        table.add_row("attempts", f"{len(losses)}  (loss in the last epoch {each}: {kept_what}{beyond})")
    if report.target:
        t = report.target
        reached = (
            f"[bold green]reached[/] {pct(t['accuracy'])} on the {t['checked_on']} set after {t['epochs']:.2f} epochs, {t['seconds']:.1f} s"
            if t["reached"]
            else f"[bold red]not reached[/] on the {t['checked_on']} set in {len(report.history)} epochs"
        )
        table.add_row(f"target {pct(t['target'])}", reached)
    train_kind, val_kind = report.train_label, report.val_label
    table.add_row(f"final train {train_kind}", pct(last["train_accuracy"]))
    if last.get("val_accuracy") is not None:
        table.add_row(f"final val {val_kind}", pct(last["val_accuracy"]))
    if report.calibration is not None:
        table.add_row("calibration", calibration_summary(report.calibration))
    if report.resumed_from is None:
        time = f"{report.seconds:.1f} s training, {report.total_seconds:.1f} s in all, on {report.device}"
    else:
        time = (
            f"{report.seconds:.1f} s training in all; resumed after epoch {report.resumed_from}, "
            f"{report.total_seconds:.1f} s this time, on {report.device}"
        )
    table.add_row("time", time)
    # Paths go below the table, one per line, never cut or folded: the terminal wraps them, a copy stays whole.
    files = [("checkpoint", str(report.run.path))]
    if report.log_path:
        files.append(("log", report.log_path))
    if report.tensorboard_path:
        files.append(("tensorboard", f"{report.tensorboard_path}  (tensorboard --logdir {report.run.path.parent})"))
    finite = [v for v in report.loss_curve if math.isfinite(v) and v > 0]
    if err.is_terminal and len(finite) >= 2 and err.width >= 40:
        err.print(loss_chart(finite, width=min(60, err.width - 12)))
        if len(finite) < len(report.loss_curve):
            err.print(
                Text(
                    f"({len(report.loss_curve) - len(finite)} reports with a NaN or infinite loss left out)",
                    style="dim",
                )
            )
    err.print(
        Text.assemble("trained ", shown(report.run.model), " -> ", (shown(report.run.name), "bold")), soft_wrap=True
    )
    err.print(table)
    for label, path in files:
        err.print(Text.assemble((f"{label:<11}", "bold"), shown(path)), soft_wrap=True)


def ensemble_summary(report: Any) -> None:
    """An ensemble's members and the ensemble: each member's test accuracy, then the ensemble's."""
    table = Table(title=f"{len(report.members)} members", title_justify="left")
    for col, justify in (
        ("member", "left"),
        ("model", "left"),
        ("seed", "right"),
        ("test accuracy", "right"),
        ("training", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for m in report.members:
        seconds = f"{m['seconds']:.1f} s" if m.get("seconds") is not None else "-"
        table.add_row(markup(m["name"]), markup(m["model"]), str(m["seed"]), pct(m["test_accuracy"]), seconds)
    best = max((m["test_accuracy"] for m in report.members if m["test_accuracy"] is not None), default=None)
    err.print(table)
    summary = Table(show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    gain = f"  (best member {pct(best)})" if best is not None else ""
    summary.add_row("test accuracy", f"[bold green]{pct(report.test_accuracy)}[/]  (loss {report.test_loss:.4f}){gain}")
    combine = report.options.get("combine", "soft")
    if report.selection:
        weights = ", ".join(f"{w:.3g}" for w in report.selection["weights"])
        combine += (
            f": weights {weights}, validation loss {report.selection['val_loss']:.4f}"
            f" ({report.selection['val_loss_equal_weights']:.4f} with equal weights)"
        )
    summary.add_row("combined by", combine)
    if report.calibration is not None:
        summary.add_row("calibration", calibration_summary(report.calibration))
    summary.add_row(
        "time",
        f"{report.seconds:.1f} s training (the members' sum), {report.total_seconds:.1f} s in all, on {report.device}",
    )
    err.print(Text.assemble("trained ensemble -> ", (shown(report.run.name), "bold")), soft_wrap=True)
    err.print(summary)
    err.print(Text.assemble(("checkpoint ", "bold"), shown(report.run.path)), soft_wrap=True)


def calibration_summary(calibration: dict[str, Any]) -> str:
    """'temperature 0.620, fitted on 3,000 held-out training images (ECE 4.10% -> 0.30%)', or why T = 1."""
    if calibration.get("fitted_on") is None or "note" in calibration:
        return f"none, temperature 1 ({markup(calibration.get('note', 'not fitted'))})"
    where = {"validation": "the validation split", "calibration": "training images held out for it"}
    text = (
        f"temperature {calibration['temperature']:.3f}, fitted on {where.get(calibration['fitted_on'], '?')} "
        f"({calibration['images']:,} images; ECE there {pct(calibration['ece_before'])} -> "
        f"{pct(calibration['ece_after'])})"
    )
    if calibration.get("sum"):
        text = f"digit {text}; sum temperature {calibration['sum']['temperature']:.3f}"
    return text


def loss_chart(values: list[float], height: int = 8, width: int = 60) -> Text:
    """A small block-character chart of positive, finite losses, log scale (the first steps would flatten the rest)."""
    buckets = max(1, -(-len(values) // width))  # ceil: at most `width` columns
    cols = [sum(values[i : i + buckets]) / len(values[i : i + buckets]) for i in range(0, len(values), buckets)]
    cols = [c for c in cols for _ in range(max(1, width // len(cols)))]  # stretch a short run to the width
    logs = [math.log(max(c, 1e-8)) for c in cols]
    lo, hi = min(cols), max(cols)
    span = (max(logs) - min(logs)) or 1.0
    levels = [0.125 + (v - min(logs)) / span * (height - 0.125) for v in logs]  # rows, in eighths; never empty
    text = Text("training loss during the run, log scale\n", style="bold")
    for row in range(height, 0, -1):
        label = f"{hi:>9.3g} ┤" if row == height else f"{lo:>9.3g} ┤" if row == 1 else "          │"
        line = "".join(
            "█" if level >= row else BLOCKS[int((level - row + 1) * 8)] if level > row - 1 else " " for level in levels
        )
        text.append(label, style="dim")
        text.append(line + "\n", style="cyan")
    text.append("          └" + "─" * len(cols) + "\n", style="dim")
    return text


def train_json(report: Any) -> None:
    json_line(
        {
            "run": report.run.name,
            "model": report.run.model,
            "path": str(report.run.path),
            "test_accuracy": report.test_accuracy,
            "test_loss": report.test_loss,
            "test_measure": report.test_measure,
            **report.test_extra,
            "seconds": round(report.seconds, 3),
            "total_seconds": round(report.total_seconds, 3),
            "epochs": len(report.history),
            "stopped_early": report.stopped_early,
            "restarts": report.restarts,
            "attempts": report.attempts,
            "target": report.target,
            "config": report.options,
            "history": report.history,
            "log": report.log_path,
            "tensorboard": report.tensorboard_path,
            "calibration": report.calibration,
            **({"members": report.members} if report.members is not None else {}),
            **({"selection": report.selection} if report.selection is not None else {}),
        }
    )


def repeat_summary(summary: Any) -> None:
    """The runs side by side, then the mean and standard deviation of each test number."""
    first = summary.reports[0]
    keys = list(summary.mean)
    units = {k: first.test_unit if k == "test" else ("" if k.endswith("auc") else "%") for k in keys}
    labels = {k: first.test_label if k == "test" else f"test {k.replace('_', ' ').replace('auc', 'AUC')}" for k in keys}
    table = Table(title=f"{len(summary.reports)} runs of {markup(first.run.model)}", title_justify="left")
    table.add_column("run", overflow="fold")
    table.add_column("seed", justify="right")
    for k in keys:
        table.add_column(labels[k], justify="right")
    for r in summary.reports:
        values = {"test": r.test_accuracy, **r.test_extra}
        table.add_row(markup(r.run.name), str(r.options.get("seed", "")), *(measure(values[k], units[k]) for k in keys))
    table.add_section()
    table.add_row(
        "[bold]mean ± std[/]",
        "",
        *(f"[bold green]{measure(summary.mean[k], units[k])}[/] ± {measure(summary.std[k], units[k])}" for k in keys),
    )
    err.print(table)


def repeat_json(summary: Any) -> None:
    first = summary.reports[0]
    json_line(
        {
            "model": first.run.model,
            "runs": [r.run.name for r in summary.reports],
            "seeds": [r.options.get("seed") for r in summary.reports],
            "test_measure": first.test_measure,
            "mean": summary.mean,
            "std": summary.std,
            "each": [{"run": r.run.name, "test_accuracy": r.test_accuracy, **r.test_extra} for r in summary.reports],
        }
    )
