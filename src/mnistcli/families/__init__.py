"""Model families, registered by name: `get_family("classify")` is the bundle `mnist train` and `mnist eval` use.

Runs saved before the triplet family had its name called it "metric"; store/checkpoint.py reads them so.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from mnistcli.errors import ModelError
from mnistcli.families.base import Data, EvalData, EvalOptions, Family, NoParams, TestResult

_FAMILIES: dict[str, type[Family]] = {}


def register_family(cls: type[Family]) -> type[Family]:
    """Class decorator: register a family under `cls.name`. Raises `ModelError` on a duplicate name."""
    if not cls.name or cls.name in _FAMILIES:
        raise ModelError(f"family {cls.name!r} is unnamed or already registered")
    _FAMILIES[cls.name] = cls
    return cls


def get_family(name: str) -> type[Family]:
    """The family registered as `name`. Raises `ModelError` if there is none."""
    if name not in _FAMILIES:
        close = difflib.get_close_matches(name, _FAMILIES, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(_FAMILIES)}"
        raise ModelError(f"unknown model family {name!r}{hint}")
    return _FAMILIES[name]


def family_names() -> list[str]:
    """Every registered family, in registration order."""
    return list(_FAMILIES)


def families_where(test: Callable[[type[Family]], bool]) -> set[str]:
    """Names of the families for which `test(family)` holds."""
    return {n for n, f in _FAMILIES.items() if test(f)}


# isort: off
from mnistcli.families import classify, contrastive, triplet, adder, bags, ensemble  # noqa: E402, F401  (registers them)
# isort: on

__all__ = [
    "Data",
    "EvalData",
    "EvalOptions",
    "Family",
    "NoParams",
    "TestResult",
    "family_names",
    "get_family",
    "register_family",
]
