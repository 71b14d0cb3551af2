"""Progress on stderr: the training bar with running loss and accuracy, and download bars.

Both start on their first update, so a command that fails before training or needs no download
prints nothing here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mnistcli.render.console import err, pct


class TrainProgress:
    """A progress bar on stderr with running loss and accuracy, and a line per epoch.

    The bar starts on the first step, so a command that fails before training prints nothing.
    """

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.2%}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        self.task: Any = None

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()

    def step(self, info: Any) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("train", total=info.total_steps, epoch="", loss=0.0, acc=0.0)
        self.progress.update(
            self.task, completed=info.step, epoch=f"{info.epoch}/{info.epochs}", loss=info.loss, acc=info.accuracy
        )

    def epoch(self, info: Any) -> None:
        val = (
            f"  val loss {info.val_loss:.4f}  val acc {pct(info.val_accuracy)}" if info.val_accuracy is not None else ""
        )
        self.progress.console.print(
            f"epoch {info.epoch:>3}  loss {info.train_loss:.4f}  acc {pct(info.train_accuracy)}{val}"
            f"  lr {info.lr:.2e}  [dim]{info.seconds:6.1f}s[/dim]"
        )


@contextmanager
def download_progress() -> Iterator[Any]:
    """Yields an `on_progress(label, done, total)` callback drawing a download bar on stderr."""
    progress = Progress(TextColumn("downloading {task.description}"), BarColumn(), DownloadColumn(), console=err)
    tasks: dict[str, Any] = {}

    def update(label: str, done: int, total: int | None) -> None:
        if label not in tasks:
            if not tasks:
                progress.start()
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done)

    try:
        yield update
    finally:
        if tasks:
            progress.stop()
