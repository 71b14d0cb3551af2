"""`mnist read`: the whole number in each image, digit by digit."""

from __future__ import annotations

import typer

from mnistcli import render
from mnistcli.cli.common import CheckpointOpt, Device, DeviceOpt, ImagesArg, JsonOpt, app, guarded, image_paths


@app.command()
@guarded
def read(
    images: ImagesArg,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
) -> None:
    """Read every digit in each image, left to right, as one number (a price, a house number, a score)."""
    with render.starting():
        from mnistcli import api

    paths = image_paths(images)
    if not paths and "-" in images:
        return  # `find ... | mnist read -` that found nothing: nothing to do
    report = api.read(paths, checkpoint, device=device.value)
    render.readings(report, json_out)
    if report.failures:
        raise typer.Exit(1)
