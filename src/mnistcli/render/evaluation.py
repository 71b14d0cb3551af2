"""`mnist eval` results: accuracy, per-class table and confusion matrix; few-shot episodes."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from mnistcli.render.console import json_line, markup, out, pct


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
            "classes": report.classes,
            "temperature": report.temperature,
            "ece": report.ece,
            "ece_uncalibrated": report.ece_uncalibrated,
            "tta": report.tta,
            **({"members": report.members, "combinations": report.combinations} if report.members is not None else {}),
        }
    )


def calibration_line(temperature: float | None, ece: float | None, raw: float | None, what: str = "") -> str:
    """'confidences: ECE 0.31% with temperature 0.62 (2.85% uncalibrated)', or why there is no temperature."""
    if ece is None or raw is None or temperature is None:
        return ""
    head = f"{what} confidences" if what else "confidences"
    if temperature == 1.0:
        return f"{head}: expected calibration error {pct(ece)} [dim](not calibrated: temperature 1)[/]"
    return (
        f"{head}: expected calibration error {pct(ece)} with temperature {temperature:.3f}"
        f" [dim]({pct(raw)} uncalibrated; 15 bins)[/]"
    )


def eval_report(report: Any) -> None:
    correct = sum(row["correct"] for row in report.per_class)
    out.print(
        f"[bold]{markup(report.run.name)}[/] ({markup(report.run.model)}{', bundled' if report.run.bundled else ''})"
    )
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
        if report.classes:
            out.print(f"on the test images of digits {','.join(map(str, report.classes))}, the ones it was trained on")
        if report.tta:
            out.print(
                "with test-time augmentation: the logits of the image and four copies shifted by one pixel, averaged"
            )
        if report.ece is not None:
            out.print(calibration_line(report.temperature, report.ece, report.ece_uncalibrated))
    if report.members is not None:
        out.print(members_table(report.members, report.combinations or {}))
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


def members_table(members: list[dict[str, Any]], combinations: dict[str, Any]) -> Table:
    """An ensemble's members beside each other, then each way of combining them (the one it uses marked)."""
    table = Table(title="members and combinations (test accuracy)", title_justify="left")
    for col, justify in (
        ("", "left"),
        ("model", "left"),
        ("accuracy", "right"),
        ("loss", "right"),
        ("weight", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for m in members:
        weight = f"{m['weight']:.3g}" if m.get("weight") is not None else ""
        table.add_row(markup(m["name"]), markup(m["model"]), pct(m["accuracy"]), f"{m['loss']:.4f}", weight)
    table.add_section()
    words = {"soft": "soft vote (mean probability)", "vote": "majority vote", "select": "soft vote, selected weights"}
    for way, label in words.items():
        if way in combinations:
            used = way == combinations.get("used")
            table.add_row(
                f"[bold]{label}[/]" if used else label,
                "used" if used else "",
                f"[bold green]{pct(combinations[way])}[/]" if used else pct(combinations[way]),
                "",
                "",
            )
    return table


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


def fewshot_json(report: Any) -> None:
    json_line(
        {
            "checkpoint": report.run.name,
            "model": report.run.model,
            "protocol": "fewshot",
            "accuracy": report.scores[0].accuracy,  # the first setting, 10-way 1-shot by default
            "episodes": [
                {
                    "name": s.name,
                    "classes": s.classes,
                    "ways": s.ways,
                    "shots": s.shots,
                    "episodes": s.episodes,
                    "queries_per_class": s.queries,
                    "accuracy": s.accuracy,
                    "ci95": s.ci95,
                    "pixels_accuracy": s.pixels_accuracy,
                    "pixels_ci95": s.pixels_ci95,
                }
                for s in report.scores
            ],
            "per_class": report.per_class,
            "seen_classes": report.seen,
            "unseen_classes": report.unseen,
            "nn_accuracy": report.nn_accuracy,
            "map": report.map_path,
            "seconds": round(report.seconds, 3),
        }
    )


def fewshot_report(report: Any) -> None:
    run = report.run
    out.print(f"[bold]{markup(run.name)}[/] ({markup(run.model)}{', bundled' if run.bundled else ''})")
    if report.unseen and report.seen:
        out.print(
            f"labels seen in training: {', '.join(map(str, report.seen))}; never seen: "
            f"{', '.join(map(str, report.unseen))}"
        )
    first = report.scores[0]
    table = Table(
        title=f"few-shot episodes on the test set ({first.episodes:,} each, {first.queries} queries per class, "
        "nearest prototype)",
        title_justify="left",
    )
    for col in ("episodes", "accuracy", "95% CI", "raw pixels", "gain"):
        table.add_column(col, justify="left" if col == "episodes" else "right")
    for s in report.scores:
        gain = 100 * (s.accuracy - s.pixels_accuracy)
        table.add_row(
            s.name,
            Text(pct(s.accuracy), style="bold green"),
            f"± {100 * s.ci95:.2f}",
            pct(s.pixels_accuracy),
            Text(f"{gain:+.1f} pts", style="green" if gain > 0 else "red"),
        )
    out.print(table)
    per_class = Table(title=f"per class, {first.name}", title_justify="left")
    for col in ("digit", "seen", "correct", "total", "accuracy"):
        per_class.add_column(col, justify="right")
    for row in report.per_class:
        style = "green" if row["accuracy"] >= 0.9 else "yellow" if row["accuracy"] >= 0.7 else "red"
        per_class.add_row(
            str(row["digit"]),
            "yes" if row["digit"] in report.seen else "[dim]no[/]",
            f"{row['correct']:,}",
            f"{row['total']:,}",
            Text(pct(row["accuracy"]), style=style),
        )
    out.print(per_class)
    out.print(
        f"nearest neighbour (each test image labelled by its nearest training image): "
        f"[bold green]{pct(report.nn_accuracy)}[/]  [dim]{report.seconds:.1f} s on {report.device}[/]"
    )


def adder_json(report: Any) -> None:
    json_line(
        {
            "checkpoint": report.run.name,
            "model": report.run.model,
            "protocol": "adder",
            "digit_accuracy": report.digit_accuracy,
            "sum_accuracy": report.sum_accuracy,
            "accuracy": report.sum_accuracy,
            "loss": report.loss,
            "total": report.total,
            "seed": report.seed,
            "by_number": report.by_number,
            "by_sum": report.by_sum,
            "temperature": report.sum_temperature,
            "ece": report.ece,
            "ece_uncalibrated": report.ece_uncalibrated,
            "digit_temperature": report.temperature,
            "digit_ece": report.digit_ece,
            "digit_ece_uncalibrated": report.digit_ece_uncalibrated,
            "seconds": round(report.seconds, 4),
        }
    )


def adder_report(report: Any) -> None:
    run = report.run
    out.print(f"[bold]{markup(run.name)}[/] ({markup(run.model)})")
    gap = 100 * (report.digit_accuracy - report.sum_accuracy)
    relation = f"{gap:.2f} pts behind the digit" if gap >= 0 else f"{-gap:.2f} pts ahead of the digit"
    out.print(
        f"digit [bold green]{pct(report.digit_accuracy)}[/], sum [bold green]{pct(report.sum_accuracy)}[/] "
        f"({relation}), loss {report.loss:.4f}; {report.total:,} test images, each paired "
        f"with a number drawn from seed {report.seed}  [dim]{report.seconds:.2f} s on {report.device}[/]"
    )
    for what, t, ece, raw in (
        ("digit", report.temperature, report.digit_ece, report.digit_ece_uncalibrated),
        ("sum", report.sum_temperature, report.ece, report.ece_uncalibrated),
    ):
        if ece is not None:
            out.print(calibration_line(t, ece, raw, what))
    for key, rows, title in (
        ("number", report.by_number, "sum accuracy by number added"),
        ("sum", report.by_sum, "sum accuracy by true sum"),
    ):
        table = Table(title=title, title_justify="left")
        for col in (key, "correct", "total", "accuracy"):
            table.add_column(col, justify="right")
        for row in rows:
            table.add_row(str(row[key]), f"{row['correct']:,}", f"{row['total']:,}", pct(row["accuracy"]))
        out.print(table)


def bags_json(report: Any) -> None:
    json_line(
        {
            "checkpoint": report.run.name,
            "model": report.run.model,
            "protocol": report.protocol,
            "auc": report.auc,
            "bag_accuracy": report.bag_accuracy,
            "loss": report.loss,
            "attention_hit": report.attention_hit,
            "attention_auc": report.attention_auc,
            "bags": report.bags,
            "target": report.target,
            "mean_bag_size": round(report.mean_size, 3),
            "seed": report.seed,
            "seconds": round(report.seconds, 4),
        }
    )


def bags_report(report: Any) -> None:
    run = report.run
    out.print(f"[bold]{markup(run.name)}[/] ({markup(run.model)})")
    out.print(
        f"bag AUC [bold green]{report.auc:.4f}[/], bag accuracy [bold green]{pct(report.bag_accuracy)}[/], "
        f"loss {report.loss:.4f}; {report.bags:,} test bags (half positive: holding a {report.target}), "
        f"{report.mean_size:.1f} images each on average, drawn from seed {report.seed}  "
        f"[dim]{report.seconds:.2f} s on {report.device}[/]"
    )
    instance = f", instance AUC of the weights {report.attention_auc:.4f}" if report.attention_auc is not None else ""
    out.print(
        f"attention: the highest-weighted image is a {report.target} in "
        f"[bold]{pct(report.attention_hit)}[/] of positive bags{instance}"
    )
