"""Progress of long work besides training steps (testing, episodes, probes), reported through one callback.

Core code never prints: it calls `on_work(what, done, total)`, and the CLI's progress module draws
it on stderr. `what` names the work in a few words ("few-shot episodes"); `done` and `total` count
it in its own units; `total` None means it is not counted (drawn as a pulsing bar). A call with
`done == total` says the work is over; `notify` (total 0) passes on a line to show, with no work to
wait for. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

WorkFn = Callable[[str, int, "int | None"], None]
CHECKING = "checking accuracy"  # a --target-accuracy check during training (shown under the training bar)


@contextmanager
def phase(on_work: WorkFn | None, what: str) -> Iterator[None]:
    """Report an uncounted piece of work: started on entry, over on exit (even on an error)."""
    if on_work is not None:
        on_work(what, 0, None)
    try:
        yield
    finally:
        if on_work is not None:
            on_work(what, 1, 1)


def notify(on_work: WorkFn | None, message: str) -> None:
    """Pass on a one-line notice (something the user should know happened), shown as is."""
    if on_work is not None:
        on_work(message, 0, 0)


class Counter:
    """Counts units of one piece of work towards `total` across many calls: `counter.add(n)`."""

    def __init__(self, on_work: WorkFn | None, what: str, total: int) -> None:
        self.on_work, self.what, self.total, self.done = on_work, what, max(total, 1), 0
        if on_work is not None:
            on_work(what, 0, self.total)

    def add(self, n: int) -> None:
        """`n` more units done."""
        self.done = min(self.total, self.done + n)
        if self.on_work is not None:
            self.on_work(self.what, self.done, self.total)

    def finish(self) -> None:
        """The work is over, whatever was counted."""
        if self.done < self.total:
            self.done = self.total - 1
            self.add(1)
