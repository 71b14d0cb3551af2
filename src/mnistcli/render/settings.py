"""`mnist settings`: the settings as a table for people, or one JSON object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

from mnistcli.render.console import json_line, markup, out


def settings_view(values: Mapping[str, Any], meanings: Mapping[str, str], path: str, as_json: bool) -> None:
    """Each setting with its value (`-` for the default, none) and meaning; `--json`: the values as one object."""
    if as_json:
        json_line(dict(values))
        return
    table = Table(title=f"settings ({markup(path)})", title_justify="left")
    shown = {key: "-" if value is None else str(value) for key, value in values.items()}
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value", min_width=max(map(len, shown.values()), default=1), overflow="fold")  # a path, whole
    table.add_column("meaning", style="dim")
    for key, value in shown.items():
        table.add_row(key, markup(value), meanings.get(key, ""))
    out.print(table)
