"""Commands on the user's own images with a checkpoint: `predict`, `embed` and `oneshot`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mnistcli import render
from mnistcli.atomic import descriptor
from mnistcli.cli import complete
from mnistcli.cli.common import (
    BackendOpt,
    CheckpointOpt,
    Device,
    DeviceOpt,
    EmbedFormat,
    ImagesArg,
    JsonOpt,
    app,
    guarded,
    image_paths,
    input_items,
)
from mnistcli.config import Backend
from mnistcli.errors import UsageError


@app.command()
@guarded
def predict(
    images: ImagesArg,
    checkpoint: CheckpointOpt = None,
    add: Annotated[
        Optional[int],
        typer.Option(
            help="Adder checkpoints: the number 0-9 to add to each digit (default checkpoint: your latest adder run).",
            metavar="N",
        ),
    ] = None,
    bag: Annotated[
        bool,
        typer.Option(
            "--bag",
            help="Multiple-instance (bags) checkpoints: each folder is one bag (its images, sorted by name), the"
            " loose files another; print each bag's probability of holding the target digit and each image's"
            " attention (default checkpoint: your latest bags run).",
        ),
    ] = False,
    device: DeviceOpt = Device.auto,
    plot: Annotated[
        Optional[str],
        typer.Option(
            "--plot",
            help="Also draw each image beside its probability bars (first 12) into this PNG; with --bag, each"
            " bag's images in a row with their attention.",
            metavar="PNG",
        ),
    ] = None,
    show_input: Annotated[
        Optional[str],
        typer.Option(
            "--show-input",
            help="Write the 28x28 picture the model saw for each image into this folder (seven.jpg -> seven.png).",
            metavar="DIR",
        ),
    ] = None,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Classifiers: test-time augmentation; average the logits of each image and four copies shifted by"
            " one pixel (five times the work).",
        ),
    ] = False,
    backend: BackendOpt = Backend.auto,
    json_out: JsonOpt = False,
) -> None:
    """Classify images: the digit, its confidence and the probability of every class (with --add: and the sum).

    With --bag (multiple-instance checkpoints): is the target digit in each bag of images, and which image shows it.
    """
    with render.starting():
        from mnistcli import api
    api.check_add(add, bag)  # before stdin is read
    paths = input_items(images)
    if not paths and "-" in images:
        return  # `find ... | mnist predict -` that found nothing: nothing to do
    if plot is not None:
        if add is not None:
            raise UsageError("--plot draws class probabilities; it does not apply with --add")
        from mnistcli.render import plots

        plots.check_writable(plot)
    report = api.predict(paths, checkpoint, device.value, add, show_input, bag, tta, backend=backend.value)
    render.predictions(report, json_out)
    if show_input is not None:
        render.shown_inputs(report.shown, show_input)
    bags = [r for r in report.results if isinstance(r, api.BagPrediction)]
    if plot is not None and bags:
        written, drawn, total = api.plot_bags(bags, plot)
        which = f"{drawn} bag{'s' if drawn > 1 else ''}" if drawn == total else f"the first {drawn} of {total} bags"
        render.note(f"wrote {which} with attention weights to {written}")
    elif plot is not None and len(report.results) > len(report.failures):
        written, drawn, total = api.plot_predictions(report, plot)
        which = f"{drawn} image{'s' if drawn > 1 else ''}" if drawn == total else f"the first {drawn} of {total} images"
        render.note(f"wrote {which} with probability bars to {written}")
    if report.failures:
        raise typer.Exit(1)


@app.command()
@guarded
def embed(
    images: ImagesArg,
    checkpoint: CheckpointOpt = None,
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write all vectors to this file (see --format); - for standard output.",
        ),
    ] = None,
    fmt: Annotated[
        Optional[EmbedFormat],
        typer.Option(
            "--format",
            help="File format for --output: npy (float32 rows) or csv (path, values).",
            show_default="from the extension; npy unless .csv",
        ),
    ] = None,
    device: DeviceOpt = Device.auto,
    backend: BackendOpt = Backend.auto,
    json_out: JsonOpt = False,
) -> None:
    """Print each image's feature vector (penultimate layer, encoder output, or siamese embedding)."""
    with render.starting():
        from mnistcli import api

    if output is not None and json_out and descriptor(output) == 1:
        raise UsageError(f"--output {output} and --json both write to standard output: give one of them")
    paths = image_paths(images)
    if not paths and "-" in images:
        return
    report = api.embed(paths, checkpoint, device=device.value, backend=backend.value)
    written = (
        str(api.save_embeddings(report, output, fmt.value if fmt else None)) if output and len(report.paths) else None
    )
    render.embeddings(report, json_out, written)
    if report.failures:
        raise typer.Exit(1)


@app.command()
@guarded
def oneshot(
    images: ImagesArg,
    support_dir: Annotated[
        str,
        typer.Option(
            help="Folder with one sub-folder per class, named by its label, each holding one or more example images.",
            metavar="DIR",
        ),
    ],
    checkpoint: Annotated[
        Optional[str],
        typer.Option(
            "--checkpoint",
            "-c",
            help="Any checkpoint `mnist embed` can use. Default: your latest siamese run.",
            metavar="CHECKPOINT",
            autocompletion=complete.checkpoint_refs,
        ),
    ] = None,
    device: DeviceOpt = Device.auto,
    backend: BackendOpt = Backend.auto,
    json_out: JsonOpt = False,
) -> None:
    """Classify images by the nearest class prototype of a folder of examples (any labels, even new symbols)."""
    with render.starting():
        from mnistcli import api

    paths = image_paths(images)
    if not paths and "-" in images:
        return
    report = api.oneshot(support_dir, paths, checkpoint, device=device.value, backend=backend.value)
    render.oneshot_results(report, json_out)
    if report.failures:
        raise typer.Exit(1)
