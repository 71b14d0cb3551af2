"""User settings: a small JSON file, `$MNISTCLI_HOME/settings.json`, shown and changed by `mnist settings`.

As `yolo settings` does: `mnist settings` shows them, `mnist settings data_dir=/path` changes one,
`mnist settings --reset` returns to the defaults. The one setting today is `data_dir`, the MNIST
folder used when neither `--data-dir` nor `$MNIST_DATA_DIR` names one; a `--data-dir` holding all
four MNIST files becomes it once a command has used it. Every value is checked before it is
written, and the file is written atomically. No torch here: `mnist settings` must stay instant.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistcli import paths
from mnistcli.atomic import atomic_write_text, mode_of
from mnistcli.data.files import open_regular
from mnistcli.errors import FileProblem, UsageError

FILE = "settings.json"
MAX_BYTES = 64 * 1024  # a settings file holds a few short values; anything much larger is not one


def _folder(value: str) -> str:
    """A folder that exists, as an absolute path (so it works from any working directory)."""
    folder = Path(value).expanduser()
    mode = mode_of(folder, f"data_dir={value}")
    if mode is None:
        raise UsageError(f"data_dir={value}: no such folder")
    if not stat.S_ISDIR(mode):
        raise UsageError(f"data_dir={value}: not a folder (a file)")
    return str(folder.resolve())


@dataclass(frozen=True)
class Setting:
    """One key: its default, what it means, and the check that turns text into its value."""

    default: Any
    meaning: str
    parse: Callable[[str], Any]  # text from the command line -> the value (raises UsageError)
    kind: type = str  # what the file must hold for it (or null)


KEYS: dict[str, Setting] = {
    "data_dir": Setting(
        None,
        "MNIST folder used when --data-dir and $MNIST_DATA_DIR name none (before the download cache)",
        _folder,
    ),
}


def path() -> Path:
    """The settings file (it may not exist yet)."""
    return paths.home() / FILE


def _read() -> dict[str, Any]:
    """Everything in the file, unknown keys included (kept when it is rewritten). Raises `FileProblem`.

    Read through `open_regular` (a FIFO or a device there is refused, never waited on) and at most `MAX_BYTES`."""
    file = path()
    fix = "fix it or run `mnist settings --reset`"
    if not os.path.exists(file):  # nothing there, or a link to nothing (writing creates what it names)
        return {}
    try:
        with open_regular(file, FileProblem, "is a folder, not a settings file; move it away") as f:
            payload = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise FileProblem(file, f"unreadable settings ({e.strerror or e}); {fix}") from None
    if len(payload) > MAX_BYTES:
        raise FileProblem(file, f"larger than {MAX_BYTES // 1024} KiB, so not a settings file; {fix}")
    try:
        text = payload.decode("utf-8")
        data = json.loads(text) if text.strip() else {}  # an empty file (e.g. `touch`ed) holds no settings
    except RecursionError:
        raise FileProblem(file, f"unreadable settings (nested too deeply); {fix}") from None
    except ValueError as e:  # not UTF-8, or not JSON
        raise FileProblem(file, f"unreadable settings ({e}); {fix}") from None
    if not isinstance(data, dict):
        raise FileProblem(file, f"settings must be a JSON object; {fix}")
    for key, setting in KEYS.items():
        value = data.get(key)
        if value is not None and not isinstance(value, setting.kind):
            raise FileProblem(
                file, f"{key} must be {setting.kind.__name__} or null; fix it or run `mnist settings --reset`"
            )
        if isinstance(value, str) and "\0" in value:  # no path holds one: os calls refuse it
            raise FileProblem(file, f"{key} holds a NUL character; fix it or run `mnist settings --reset`")
    return data


def load() -> dict[str, Any]:
    """Every known setting: the file's value, else the default. Raises `FileProblem` if the file is corrupt."""
    data = _read()
    return {key: data.get(key, setting.default) for key, setting in KEYS.items()}


def _write(data: Mapping[str, Any]) -> None:
    atomic_write_text(path(), json.dumps(dict(data), indent=2) + "\n")


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """['data_dir=/x'] -> {'data_dir': '/x' checked and absolute}; an empty value means the default.

    Raises `UsageError` for a pair without '=', an unknown key, or a value that fails its check.
    """
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"{pair!r}: expected KEY=VALUE, e.g. data_dir=~/mnist")
        if key not in KEYS:
            raise UsageError(f"unknown setting {key!r} (known: {', '.join(KEYS)})")
        changes[key] = KEYS[key].parse(value) if value else KEYS[key].default
    return changes


def update(pairs: list[str], reset: bool = False) -> dict[str, Any]:
    """Apply `key=value` pairs (after clearing the file if `reset`), write the file; returns the settings.

    Every pair is checked before anything is written. Raises `UsageError` (see `parse_pairs`).
    """
    changes = parse_pairs(pairs)
    data = {} if reset else _read()
    data = {**{key: s.default for key, s in KEYS.items()}, **data, **changes}
    _write(data)
    return load()


def remember_data_dir(folder: str | Path) -> bool:
    """Make `folder` the remembered `data_dir`; returns whether that changed the setting.

    A corrupt settings file is left alone (returns False): remembering is a convenience, never a failure.
    """
    value = str(Path(folder).expanduser().resolve())
    try:
        data = _read()
    except FileProblem:
        return False
    if data.get("data_dir") == value:
        return False
    try:
        _write({**{key: s.default for key, s in KEYS.items()}, **data, "data_dir": value})
    except FileProblem:  # a read-only home, say
        return False
    return True
