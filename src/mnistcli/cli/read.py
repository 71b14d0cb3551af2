"""`mnist read`: the whole number in each image, digit by digit."""

from __future__ import annotations

import typer

from mnistcli import render
from mnistcli.cli.common import (
    BackendOpt,
    CheckpointOpt,
    Device,
    DeviceOpt,
    ImagesArg,
    JsonOpt,
    app,
    guarded,
    image_paths,
)
from mnistcli.config import Backend


@app.command()
@guarded
def read(
    images: ImagesArg,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.auto,
    backend: BackendOpt = Backend.auto,
    json_out: JsonOpt = False,
) -> None:
    """Read every digit in each image, left to right, as one number (a price, a house number, a score)."""
    with render.starting():
        from mnistcli import api

    paths = image_paths(images)
    if not paths and "-" in images:
        return  # `find ... | mnist read -` that found nothing: nothing to do
    report = api.read(paths, checkpoint, device=device.value, backend=backend.value)
    render.readings(report, json_out)
    if report.failures:
        raise typer.Exit(1)
