"""Reading one value of a trusted-nothing JSON description at a time, each checked (`Fields`), and training
options checked against the dataclasses that define them (`check_options`).

store/checkpoint.py builds a run's typed description from these; a wrong value is a `CheckpointError` naming the
file and the field, never a TypeError or a RecursionError from deep inside.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

from mnistcli.errors import CheckpointError, MnistError

MAX_DEPTH = 32  # levels of nesting: a description has eight at most (an ensemble member's widths); JSON allows ~1000


def shown(value: Any) -> str:
    """A field's value in an error message: short, and no container spelled out."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Fields:
    """Reads the values of one `meta.json`, each checked: a wrong one raises `CheckpointError` naming the file and
    the field. None (a field missing, or null) gives the default; numbers come back as floats."""

    def __init__(self, where: Path | str) -> None:
        self.where = where

    def wrong(self, key: str, wanted: str, value: Any) -> CheckpointError:
        return CheckpointError(f"{self.where}: {key!r} must be {wanted}, not {shown(value)}")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is not None and not isinstance(value, dict):
            raise self.wrong(key, "an object", value)
        return dict(value or {})

    def sequence(self, value: Any, key: str) -> list[Any]:
        if value is not None and not isinstance(value, list):
            raise self.wrong(key, "a list", value)
        return list(value or [])

    def text(
        self, value: Any, key: str, default: str | None = "", pattern: re.Pattern[str] | None = None
    ) -> str | None:
        if value is None:
            return default
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            raise self.wrong(key, "text" if pattern is None else f"a name matching {pattern.pattern}", value)
        return value

    def flag(self, value: Any, key: str, default: bool) -> bool:
        if value is not None and not isinstance(value, bool):
            raise self.wrong(key, "true or false", value)
        return default if value is None else value

    def whole(self, value: Any, key: str, low: int = 0, high: int | None = None) -> int | None:
        if value is not None and (type(value) is not int or value < low or (high is not None and value > high)):
            raise self.wrong(key, f"a whole number of at least {low}" + (f" and at most {high}" if high else ""), value)
        return value

    def number(
        self, value: Any, key: str, low: float = -math.inf, high: float = math.inf, measured: bool = False
    ) -> float | None:
        """A finite number in [low, high]; a `measured` one may also be NaN or infinite (what a diverged run measures)."""
        if value is None:
            return None
        try:
            x = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        except OverflowError:  # an integer beyond any float
            x = None
        if x is None or not (low <= x <= high or (measured and not math.isfinite(x))):
            span = "" if (low, high) == (-math.inf, math.inf) else f" from {low:g} to {high:g}"
            raise self.wrong(key, f"a{'' if measured else ' finite'} number{span}", value)
        return x

    def values(self, value: Any, key: str) -> int:
        """How many values `value` holds, itself included; raises past MAX_DEPTH levels (without recursion)."""
        count, todo = 0, [(value, 1)]
        while todo:
            value, depth = todo.pop()
            if depth > MAX_DEPTH:
                raise CheckpointError(f"{self.where}: {key} nests more than {MAX_DEPTH} levels deep")
            count += 1
            inner = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
            todo.extend((v, depth + 1) for v in inner)
        return count


def check_options(config: dict[str, Any], options: type, where: Path | str) -> None:
    """Raise `CheckpointError` naming `where` and the option unless the entries of `config` that the dataclass
    `options` (TrainConfig, a family's Params) has are each of its field's type and, together, accepted by it."""
    hints = typing.get_type_hints(options)
    given = {f.name: config[f.name] for f in dataclasses.fields(options) if f.name in config}
    for key, value in given.items():
        if not _fits(value, hints[key]):
            wanted = getattr(hints[key], "__name__", str(hints[key]).replace("typing.", ""))
            raise CheckpointError(f"{where}: 'config.{key}' must be of type {wanted}, not {shown(value)}")
    try:
        options(**given)
    except (MnistError, TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{where}: 'config' holds options a run cannot have had ({e})") from None


def _fits(value: Any, hint: Any) -> bool:
    """Whether the JSON `value` is of the annotated type `hint` (int, float, bool, str, tuples of them, optional ones);
    a type not listed fits anything, and the dataclass's own checks judge it."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint in (bool, str):
        return isinstance(value, hint)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return is_number(value)
    if typing.get_origin(hint) in (tuple, list):
        item = (typing.get_args(hint) or (Any,))[0]
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    return True


def is_number(value: Any) -> bool:
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:
        return False
