"""`mnist settings`: show or change the user's settings, as `yolo settings` does; and remembering a data folder.

Torch-free: it talks to `mnistcli.settings` directly, so `mnist settings` answers at once.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mnistcli import render
from mnistcli.cli.common import JsonOpt, app, guarded


@app.command("settings")
@guarded
def settings_(
    pairs: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="KEY=VALUE",
            help="Settings to change, e.g. data_dir=~/mnist (empty: the default).",
            show_default=False,
        ),
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Forget every setting (back to the defaults) first.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show the settings, or change them: `mnist settings data_dir=~/mnist`, `mnist settings --reset`."""
    import os
    from pathlib import Path

    from mnistcli import settings
    from mnistcli.data.mnist import ENV_DATA_DIR, missing_files

    values = settings.update(pairs or [], reset) if pairs or reset else settings.load()
    render.settings_view(values, {k: s.meaning for k, s in settings.KEYS.items()}, str(settings.path()), json_out)
    data_dir = values.get("data_dir")
    missing = missing_files(Path(data_dir)) if data_dir else []
    if missing and any(p.startswith("data_dir=") for p in pairs or []):
        render.note(f"{data_dir} has no MNIST file for {', '.join(missing)} yet; commands that need them will say so")
    env = os.environ.get(ENV_DATA_DIR)
    if env and data_dir:
        render.note(f"{ENV_DATA_DIR} is set ({env}): it takes precedence over data_dir")


def remember_data_dir(data_dir: str | None) -> None:
    """After a command read MNIST from `--data-dir` and succeeded: make that folder the default, and say so once."""
    if data_dir is None:
        return
    from mnistcli.data.mnist import remember

    folder = remember(data_dir)
    if folder is not None:
        render.note(f"remembered {folder} as your MNIST folder for later commands (`mnist settings` shows it)")
