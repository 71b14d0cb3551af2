"""How `--help` and bad values read: short metavars, no type noise on flags, plain error messages.

Typer 0.29 labels every parameter with its Python type (`--json <bool>`, `IMAGE <list[str]>`), puts
a required argument in braces in the usage line (`{IMAGE}...`), and passes pydantic's wording
through for a bad value ("Value error, 'rmsprop' is not one of..."). The three small overrides
below make the help read as git's or pip's does: a flag has no metavar, an argument is named once
by its metavar, and the usage line reads `IMAGE...` / `[CHECKPOINT]`. They touch only how help is
drawn, and each is skipped if this Typer lacks the method (older Typers draw help that way anyway).
The parsers give one-line messages: "'rmsprop' is not one of sgd, nesterov, adam, adamw, muon".
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

import typer

try:  # Typer >= 0.2x: its own parameter classes
    from typer.core import TyperArgument, TyperOption
except ImportError:  # pragma: no cover
    TyperArgument = TyperOption = None  # type: ignore[assignment,misc]

E = TypeVar("E", bound=Enum)
SEED_MAX = 2**63 - 1

# The panels of `mnist train --help`, in the order they are shown (Typer keeps first-seen order).
OPTIMISATION, DATA, STOPPING, FAMILY, ENSEMBLE, RUN = (
    "Optimisation",
    "Data",
    "Stopping early",
    "Triplet and contrastive models",
    "Ensembles",
    "The run",
)


def _patch(cls: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    original = getattr(cls, name, None) if cls is not None else None
    if callable(original):
        setattr(cls, name, make(original))


def _option_type(original: Callable[..., Any]) -> Callable[..., Any]:
    def display_type_rich(self: Any, ctx: Any) -> Any:
        return None if self.is_flag and self.metavar is None else original(self, ctx)

    return display_type_rich


def _argument_type(original: Callable[..., Any]) -> Callable[..., Any]:
    def display_type_rich(self: Any, ctx: Any) -> Any:
        return None if self.metavar is not None else original(self, ctx)

    return display_type_rich


def _usage_name(original: Callable[..., Any]) -> Callable[..., Any]:
    def usage_display_name(self: Any) -> str:
        name = str(self.display_name_raw)
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    return usage_display_name


_patch(TyperOption, "display_type_rich", _option_type)
_patch(TyperArgument, "display_type_rich", _argument_type)
_patch(TyperArgument, "_usage_display_name", _usage_name)


def choice(enum: type[E]) -> Callable[[Any], E]:
    """A `parser=` for an Enum option: its member, or a one-line error listing the choices."""

    def parse(value: Any) -> E:
        if isinstance(value, enum):
            return value
        try:
            return enum(value)
        except ValueError:
            names = ", ".join(str(e.value) for e in enum)
            raise typer.BadParameter(f"{value!r} is not one of {names}") from None

    return parse


def either(enum: type[Enum]) -> str:
    """An Enum's values for a help text: 'sgd, nesterov, adam, adamw or muon'."""
    names = [str(e.value) for e in enum]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def seed(value: Any) -> int:
    """A `parser=` for --seed: a whole number from 0 to 2**63 - 1 (a 64-bit generator's seed)."""
    if isinstance(value, int):
        return value
    try:
        number = int(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a whole number") from None
    if not 0 <= number <= SEED_MAX:
        raise typer.BadParameter(f"{number} is out of range: a seed is from 0 to 2**63 - 1")
    return number
