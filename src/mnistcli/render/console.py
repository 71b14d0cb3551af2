"""The two consoles and the small formatting helpers every view uses.

As rich-cli does: results go to stdout (`out`), messages and progress to stderr (`err`), so
`mnist predict ... --json | jq` always works. Nothing in render/ imports torch; values arrive as
the api's dataclasses.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
BLOCKS = " ▁▂▃▄▅▆▇█"


_speaker = ""  # who says an error, when this process is not the one that reports (`quiet`)
# Control characters (C0, DEL, C1) and the stand-ins for bytes that are not UTF-8 (surrogateescape).
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
    **{0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)},
    # Unicode's line separators, the marks that reorder text on screen and the invisible ones (a name that reads
    # as another): bidi controls and marks, zero-width spaces and joiners, the word joiner, the byte-order mark.
    **{
        c: f"\\u{c:04x}"
        for c in (0x061C, *range(0x200B, 0x2010), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2060, 0x206A))
    },
    0xFEFF: "\\ufeff",
}


def shown(text: object) -> str:
    """`text` safe to print: each control character (a newline, an escape sequence's ESC, ...) and each byte of a
    name that is not UTF-8 written as a Python-style escape (`\\n`, `\\x1b`), so one record stays one line and nothing
    reaches the terminal as a command. Every path, name and message from outside goes through this; JSON escapes
    on its own."""
    return str(text).translate(_CONTROL)


def markup(text: object) -> str:
    """`text` to put inside rich markup: `shown` (no control character reaches the terminal), then its square
    brackets escaped (a name such as `run[bold]` stays as it is written)."""
    return escape(shown(text))


def error(message: str, shared: bool = False) -> None:
    """One red line on stderr; none in a `quiet` process for a `shared` one, which every process of the run meets
    alike and rank 0 says (Ctrl-C)."""
    if _speaker:  # the quiet consoles print nothing: an error still gets out, saying whose it is
        if shared:
            return
        sys.stderr.write(f"error: {_speaker}: {shown(message)}\n")
        return
    err.print(Text.assemble(("error: ", "bold red"), (shown(message), "red")), soft_wrap=True)


def quiet(who: str) -> None:
    """Say nothing from here on but errors, each prefixed with `who` (the processes of a data-parallel run other
    than rank 0, which reports for all of them)."""
    global _speaker
    _speaker = who
    out.quiet = err.quiet = True


def note(message: str) -> None:
    """One dim line on stderr."""
    err.print(Text(shown(message), style="dim"), soft_wrap=True)


def json_line(obj: Any) -> None:
    """One compact JSON object on stdout (never through rich, so no markup or wrapping). JSON has no NaN or
    Infinity: such a number (a diverged run's loss) is written as null, and a warning on stderr names it."""
    missing: list[str] = []
    sys.stdout.write(json.dumps(_finite(obj, "", missing), separators=(",", ":"), allow_nan=False) + "\n")
    if missing:
        shown_keys = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        note(f"warning: not a finite number, written as null in the JSON: {shown_keys}")


def _finite(value: Any, where: str, missing: list[str]) -> Any:
    """`value` with every NaN or infinite float replaced by None (its place noted in `missing`)."""
    if isinstance(value, float) and not math.isfinite(value):
        missing.append(f"{where or 'value'} ({value})")
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k), missing) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{where}[{i}]", missing) for i, v in enumerate(value)]
    return value


def is_terminal() -> bool:
    return sys.stdout.isatty()


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def sparkbar(values: Sequence[float]) -> str:
    """One block character per value in [0, 1]: a probability bar for every class in one cell."""
    return "".join(BLOCKS[min(len(BLOCKS) - 1, round(v * (len(BLOCKS) - 1)))] for v in values)


def fitting(make: Callable[[set[str]], Table], droppable: Sequence[str], console: Console = out) -> Table:
    """The table `make(dropped)` builds, giving up `droppable` things in order until it fits the console.

    Names and paths a user copies are never cut to fit: they go in `no_wrap` columns, and the
    decoration (a bar, a date, a size) goes first. By convention the last droppable is "fold":
    `make` then lets the name column fold onto more lines, whole, rather than cut anything.
    """
    unbounded = console.options.update_width(1_000_000)  # measure what the table needs, not what it is given
    dropped: set[str] = set()
    table = make(dropped)
    for column in droppable:
        if Measurement.get(console, unbounded, table).minimum <= console.width:
            break
        dropped.add(column)
        table = make(dropped)
    return table


def bar(value: float, width: int = 30) -> str:
    full = value * width
    return "█" * int(full) + ("▌" if full - int(full) >= 0.5 else "")


@contextlib.contextmanager
def starting(what: str = "starting: loading PyTorch") -> Iterator[None]:
    """A transient spinner on a terminal's stderr while the first slow import runs (torch: 2-5 s cold).

    Nothing when stderr is not a terminal or torch is already loaded, so pipes and tests see no change.
    """
    if "torch" in sys.modules or not err.is_terminal:
        yield
        return
    with err.status(Text(f"{what}…", style="dim")):
        yield
