"""Progress on stderr: the training bar and a line per epoch, bars for other long work, download bars.

Core code reports through callbacks (training.StepInfo/EpochInfo, work.WorkFn, the download's
ProgressFn) and never prints; this module draws them. Each display starts on its first update, so
a command that fails early or has nothing long to do prints nothing here, and each bar is gone
when its work is over (the results follow).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mnistcli.render.console import err, markup, pct
from mnistcli.work import CHECKING

W = TypeVar("W", bound="WorkProgress")


class _Remaining(TimeRemainingColumn):
    """Time left, or nothing when it cannot be known (uncounted work) or the work is over."""

    def render(self, task: Task) -> Text:
        if task.total is None or task.finished:
            return Text("")
        return super().render(task)


class WorkProgress:
    """Bars on stderr for long work reported as `work(what, done, total)` (see mnistcli.work).

    One line per piece of work, removed when it is over; uncounted work (`total` None) pulses.
    """

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            _Remaining(),
            console=err,
            transient=True,
        )
        self.started = False
        self.pieces: dict[str, Any] = {}

    def __enter__(self: W) -> W:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()

    def start(self) -> None:
        if not self.started:
            self.progress.start()
            self.started = True

    def work(self, what: str, done: int, total: int | None) -> None:
        """Show, advance or end (`done == total`) the bar of `what`; with `total` 0, print `what` as a line."""
        if total == 0:
            self.progress.console.print(f"[yellow]{markup(what)}[/yellow]")
            return
        if total is not None and done >= total:
            if what in self.pieces:
                self.progress.remove_task(self.pieces.pop(what))
            return
        self.start()
        count = f"{done:,}/{total:,}" if total is not None else ""
        if what not in self.pieces:
            self.pieces[what] = self.progress.add_task(f"{what}…", total=total, count=count, stats="")
        self.progress.update(self.pieces[what], completed=done, total=total, count=count)


class TrainProgress(WorkProgress):
    """The training bar with running loss and accuracy, a line per epoch, and bars for other work.

    Other work during training (a `--target-accuracy` check) gets its own line under the bar;
    the test after training gets its own bar once training is over.
    """

    def __init__(self) -> None:
        super().__init__()
        self.task: Any = None

    def step(self, info: Any) -> None:
        self.start()
        stats = f"loss {info.loss:.4f}  acc {info.accuracy:.2%}"
        epoch, count = f"epoch {info.epoch}/{info.epochs}", f"{info.step}/{info.total_steps}"
        if self.task is None:  # created with the first report's values: no frame shows a made-up 0.0000
            self.task = self.progress.add_task(
                epoch, total=info.total_steps, completed=info.step, count=count, stats=stats
            )
        self.progress.update(self.task, description=epoch, completed=info.step, count=count, stats=stats)

    def epoch(self, info: Any) -> None:
        val = (
            f"  val loss {info.val_loss:.4f}  val acc {pct(info.val_accuracy)}" if info.val_accuracy is not None else ""
        )
        self.progress.console.print(
            f"epoch {info.epoch:>3}  loss {info.train_loss:.4f}  acc {pct(info.train_accuracy)}{val}"
            f"  lr {info.lr:.2e}  [dim]{info.seconds:.1f} s elapsed[/dim]"
        )

    def work(self, what: str, done: int, total: int | None) -> None:
        # Once the test after training starts, the finished training bar makes way for it.
        if self.task is not None and what != CHECKING and total != done and total != 0:
            self.progress.update(self.task, visible=False)
        super().work(what, done, total)


class RunsProgress(WorkProgress):
    """Several named trainings, one after another or several at once (`--jobs`): an ensemble's members or the
    repeats of `--runs`. A bar per run while it trains, its epochs as lines named by the run, and any work after
    them (an ensemble's combination)."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: dict[str, Any] = {}

    def run(self, name: str) -> RunView:
        """The callbacks (`on_step`, `on_epoch`, `on_work`) that show run `name`."""
        return RunView(self, name)


class RunView:
    """One run's part of a `RunsProgress`."""

    def __init__(self, view: RunsProgress, name: str) -> None:
        self.view, self.name = view, name

    def on_step(self, info: Any) -> None:
        view = self.view
        view.start()
        stats = f"loss {info.loss:.4f}  acc {info.accuracy:.2%}"
        what = f"{self.name} epoch {info.epoch}/{info.epochs}"
        count = f"{info.step}/{info.total_steps}"
        if self.name not in view.bars:
            view.bars[self.name] = view.progress.add_task(what, total=info.total_steps, count=count, stats=stats)
        view.progress.update(view.bars[self.name], description=what, completed=info.step, count=count, stats=stats)

    def on_epoch(self, info: Any) -> None:
        val = f"  val acc {pct(info.val_accuracy)}" if info.val_accuracy is not None else ""
        self.view.progress.console.print(
            f"[bold]{markup(self.name)}[/] epoch {info.epoch:>3}  loss {info.train_loss:.4f}"
            f"  acc {pct(info.train_accuracy)}{val}  [dim]{info.seconds:.1f} s[/dim]"
        )

    def on_work(self, what: str, done: int, total: int | None) -> None:
        if total == 0:  # a notice, such as the member's result
            self.view.progress.console.print(f"[bold]{markup(self.name)}[/] {markup(what)}")
            return
        if self.name in self.view.bars and total != done and what != CHECKING:
            self.view.progress.update(self.view.bars.pop(self.name), visible=False)  # its training is over
        self.view.work(f"{self.name} {what}", done, total)


@contextmanager
def work_progress() -> Iterator[Any]:
    """Yields a `work(what, done, total)` callback drawing bars on stderr (see mnistcli.work)."""
    with WorkProgress() as view:
        yield view.work


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
