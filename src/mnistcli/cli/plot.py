"""`mnist plot RUN...`: learning curves, confusion matrix and misclassified digits as PNG files."""

from __future__ import annotations

from typing import Annotated

import typer

from mnistcli import render
from mnistcli.cli import complete
from mnistcli.cli.common import DataDirOpt, Device, DeviceOpt, JsonOpt, app, guarded
from mnistcli.cli.settings import remember_data_dir
from mnistcli.render import progress


@app.command()
@guarded
def plot(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="Run names or folders (interrupted runs too).", metavar="RUN", autocompletion=complete.run_names
        ),
    ],
    output: Annotated[str, typer.Option("--output", "-o", metavar="DIR", help="Folder for the PNG files.")] = ".",
    data_dir: DataDirOpt = None,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
) -> None:
    """Draw runs: learning curves (several runs on one chart), and a classifier's confusion matrix and mistakes."""
    with render.starting():
        from mnistcli import api

        api.load("plot")  # torch, under the spinner

    with progress.download_progress() as on_download:
        report = api.plot(runs, output, data_dir=data_dir, device=device.value, on_download=on_download)
    render.plot_report(report, json_out)
    remember_data_dir(data_dir)
