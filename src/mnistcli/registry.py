"""The model registry: one decorator registers a builder under its name, one factory builds all.

Modelled on timm's `register_model` (wildcard `list_models`) and torchvision's `_api` (a duplicate
name is a hard error). Each entry knows its family (families/: how it is trained, tested and
served) and its training recipe (the defaults `mnist train NAME` uses). The model modules register
themselves when `mnistcli.models` is imported, which happens on the first lookup here, so
importing this module stays cheap (no torch).
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mnistcli.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

B = TypeVar("B", bound=Callable[..., "nn.Module"])


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, family, one-line description and training recipe.

    `legacy` holds the arguments the model gained after checkpoints of it were written, each with the value that
    builds the model those checkpoints hold (see `saved_args`)."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    description: str
    recipe: dict[str, Any] = field(default_factory=dict)
    legacy: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, family: str, description: str, legacy: Any = None, **recipe: Any) -> Callable[[B], B]:
    """Decorator: register `builder(**kwargs) -> nn.Module` under `name`, trained as a `family` model.

    `recipe` holds this model's defaults of training options (TrainConfig's and its family's
    Params'). `legacy`: arguments added to a model that already had checkpoints, with the values
    those checkpoints were built with (`saved_args`). Raises `ModelError` on a duplicate name; a
    test checks every family exists.
    """

    def decorate(builder: B) -> B:
        if name in _REGISTRY:
            raise ModelError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, builder, family, description, dict(recipe), dict(legacy or {}))
        return builder

    return decorate


def _load() -> None:
    import mnistcli.models  # noqa: F401  (registers every built-in model)


def list_models(pattern: str = "*") -> list[ModelEntry]:
    """Entries whose name matches the shell-style `pattern`, in registration order."""
    _load()
    return [e for n, e in _REGISTRY.items() if fnmatch.fnmatchcase(n, pattern)]


def get_entry(name: str) -> ModelEntry:
    """The entry for `name`. Raises `ModelError` naming close matches if there is none."""
    _load()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(_REGISTRY)}"
        raise ModelError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def model_args(name: str) -> dict[str, Any]:
    """The arguments `name`'s builder takes (`--arg KEY=VALUE`), each with its default (`inspect.Parameter.empty`
    if it has none), read from the builder's signature. Raises `ModelError` for an unknown name."""
    signature = inspect.signature(get_entry(name).builder)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in signature.parameters.values() if p.kind in named}


def recorded_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments a new checkpoint of `name` records: `args`, plus the current default of each argument the model
    gained since its first checkpoints (its `legacy` ones), so a later reading cannot take them for an old one's."""
    entry = get_entry(name)
    defaults = model_args(name)
    return {**{k: defaults[k] for k in entry.legacy if k not in args}, **args}


def saved_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments a checkpoint of `name` recorded as `args` was built with: a `legacy` argument it does not record
    predates it and takes the value that builds the model it holds (a checkpoint of `cnn-fast` from before its stem
    lost its batch norm: `stem_norm=True`); an ensemble's members' arguments the same way, each by its model. An
    unknown `name` is left for the rebuild to refuse."""
    _load()
    entry = _REGISTRY.get(name)
    built = {**entry.legacy, **args} if entry is not None else dict(args)
    members = built.get("members")
    if entry is not None and entry.family == "ensemble" and isinstance(members, list):  # each member as built too
        built["members"] = [_member_as_built(m) for m in members]
    return built


def _member_as_built(member: Any) -> Any:
    """An ensemble member's {'name': MODEL, 'args': {...}} (no 'args': none given) with its args as built
    (`saved_args`); anything else as it is, for the ensemble's builder to refuse."""
    args = member.get("args", {}) if isinstance(member, dict) else None
    if not (isinstance(member, dict) and isinstance(member.get("name"), str) and isinstance(args, dict)):
        return member
    return {**member, "args": saved_args(member["name"], args)}


def describe_args(name: str) -> str:
    """'its arguments: width=16, hidden=128' or 'it takes no arguments', for messages."""
    args = model_args(name)
    if not args:
        return "it takes no arguments"

    def spelled(v: Any) -> str:  # as `--arg KEY=VALUE` takes it: a switch is true or false
        return str(v).lower() if isinstance(v, bool) else repr(v)

    shown = (k if v is inspect.Parameter.empty else f"{k}={spelled(v)}" for k, v in args.items())
    return "its arguments: " + ", ".join(shown)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as `name` with `kwargs`.

    Raises `ModelError` naming the model's arguments and their defaults for an argument it does not
    take, and `ModelError` for a bad value.
    """
    entry = get_entry(name)
    takes_any = any(
        p.kind == inspect.Parameter.VAR_KEYWORD for p in inspect.signature(entry.builder).parameters.values()
    )
    unknown = [k for k in kwargs if k not in model_args(name)]
    if unknown and not takes_any:
        which = "argument" if len(unknown) == 1 else "arguments"
        raise ModelError(f"model {name!r} has no {which} {', '.join(map(repr, unknown))}; {describe_args(name)}")
    for key, value in kwargs.items():
        _check_arg(name, key, value, model_args(name).get(key, inspect.Parameter.empty))
    import torch

    try:
        with torch.device("meta"):  # sized first, without memory: a width of 10**6 is refused, not allocated
            sized = entry.builder(**kwargs)
        planned = sum(t.numel() for t in (*sized.parameters(), *sized.buffers()))
        if planned > MAX_PARAMETERS:
            raise ModelError(
                f"model {name!r} with {kwargs} would hold {planned:,} numbers ({4 * planned / 2**30:.1f} GiB); "
                f"at most {MAX_PARAMETERS:,}"
            )
        return entry.builder(**kwargs)
    except ModelError:
        raise
    except Exception as e:  # a wrong value of an argument surfaces as many error types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"model {name!r}: bad arguments {kwargs} ({first}); {describe_args(name)}") from None


MAX_PARAMETERS = 250_000_000  # 1 GiB of float32 weights: far beyond any MNIST model, far below a machine's memory


def _check_arg(name: str, key: str, value: Any, default: Any) -> None:
    """`ModelError` unless `value` is of the kind `key`'s default is: a whole number, a finite number, a switch, a
    word, or a list of whole numbers (an argument without a default, or None, takes anything its builder takes)."""
    kinds: list[tuple[type, str, Callable[[Any], bool]]] = [
        (bool, "true or false", lambda v: isinstance(v, bool)),
        (int, "a whole number of at least 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        (
            float,
            "a finite number",
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        ),
        (str, "a word", lambda v: isinstance(v, str)),
        (
            tuple,
            "a list of whole numbers of at least 1, e.g. [256,128]",
            lambda v: (
                isinstance(v, (list, tuple))
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)
            ),
        ),
    ]
    for kind, wanted, ok in kinds:
        if type(default) is kind:
            if not ok(value):
                raise ModelError(f"model {name!r}: {key} must be {wanted}, not {value!r}; {describe_args(name)}")
            return


@functools.cache
def declared_models() -> dict[str, dict[str, Any]]:
    """Every `@register_model` in the model modules, read from their source without importing them (no torch).

    Returns {name: recipe} in `mnist models` order. A recipe spread from a module-level dict
    (`**RECIPE`, also one imported from an earlier model module) is followed. Shell completion and
    `--help` use this, as they must stay fast; a test checks it against the registry itself. It
    never raises: what it cannot read it leaves out (completion then offers less; nothing breaks).
    """
    folder = Path(__file__).parent / "models"
    found: dict[str, dict[str, Any]] = {}
    try:
        init = ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))
        modules = [
            a.name
            for node in init.body
            if isinstance(node, ast.ImportFrom) and node.module == "mnistcli.models"
            for a in node.names
        ]
        dicts: dict[str, dict[str, Any]] = {}  # module-level `NAME = {...}` seen so far, for `**NAME`
        for module in modules:
            tree = ast.parse((folder / f"{module}.py").read_text(encoding="utf-8"))
            for node in tree.body:
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                    value = _dict(node.value, dicts)
                    dicts.update({t.id: value for t in node.targets if isinstance(t, ast.Name) and value is not None})
                for call in getattr(node, "decorator_list", []):
                    name = _registration(call)
                    if name is not None:
                        found[name] = _recipe(call, dicts)
    except (OSError, SyntaxError, UnicodeDecodeError):
        pass
    return found


def _literal(node: ast.expr) -> Any:
    """The value of a literal expression, or None if it is not one."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _dict(node: ast.Dict, dicts: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The value of a literal dict, `{**NAME, "key": value}` spreads of dicts seen earlier included; else None."""
    value: dict[str, Any] = {}
    for key, item in zip(node.keys, node.values, strict=True):
        if key is None:  # **NAME
            if not isinstance(item, ast.Name) or item.id not in dicts:
                return None
            value.update(dicts[item.id])
            continue
        k, v = _literal(key), _literal(item)
        if not isinstance(k, str) or (v is None and not (isinstance(item, ast.Constant) and item.value is None)):
            return None
        value[k] = v
    return value


def _registration(call: ast.expr) -> str | None:
    """The name in `@register_model("name", ...)` (or `@registry.register_model(...)`), else None."""
    if not isinstance(call, ast.Call) or not call.args:
        return None
    func = call.func
    called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    name = _literal(call.args[0]) if called == "register_model" else None
    return name if isinstance(name, str) else None


def _recipe(call: ast.Call, dicts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The recipe keywords of a registration: literal values, and `**NAME` of a literal dict seen earlier."""
    recipe: dict[str, Any] = {}
    for k in call.keywords:
        if k.arg is None and isinstance(k.value, ast.Name):
            recipe.update(dicts.get(k.value.id) or {})
        elif k.arg not in ("family", "description", "legacy"):
            value = _literal(k.value)
            if value is not None:
                recipe[str(k.arg)] = value
    return recipe
