"""Commands that use a checkpoint: `eval`, `predict`, `embed` and `oneshot`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mnistcli import render
from mnistcli.cli import complete, helptext
from mnistcli.cli.common import (
    CheckpointOpt,
    DataDirOpt,
    Device,
    DeviceOpt,
    EmbedFormat,
    ImagesArg,
    JsonOpt,
    app,
    guarded,
    image_paths,
    parse_ints,
)
from mnistcli.cli.settings import remember_data_dir
from mnistcli.errors import UsageError
from mnistcli.render import progress


@app.command("eval")
@guarded
def eval_(
    checkpoint_arg: Annotated[
        Optional[str],
        typer.Argument(
            metavar="CHECKPOINT",
            help="Same as --checkpoint.",
            show_default=False,
            autocompletion=complete.checkpoint_refs,
        ),
    ] = None,
    checkpoint: CheckpointOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = Device.auto,
    labels_per_class: Annotated[
        Optional[int],
        typer.Option(
            help="Self-supervised checkpoints: train the linear probe on only K labelled images per digit.", metavar="K"
        ),
    ] = None,
    fewshot: Annotated[
        bool,
        typer.Option("--fewshot", help="Run the few-shot protocol on any checkpoint (embedding models always get it)."),
    ] = False,
    shots: Annotated[
        Optional[str],
        typer.Option(
            help="Few-shot: examples per class in each episode, e.g. 1,5.", metavar="K,...", show_default="1,5"
        ),
    ] = None,
    episodes: Annotated[
        Optional[int], typer.Option(help="Few-shot: episodes per setting.", show_default="1000")
    ] = None,
    seed: Annotated[
        Optional[int],
        typer.Option(
            help="Draws the few-shot episodes, the --labels-per-class images, or the number paired with each test"
            " image for an adder.",
            show_default="0; an adder's training seed",
            parser=helptext.seed,
        ),
    ] = None,
    map_path: Annotated[
        Optional[str],
        typer.Option("--map", help="Few-shot: write a PCA map of the test embeddings to this PNG.", metavar="PNG"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint on the 10,000 MNIST test images.

    Classifiers: accuracy, per class, confusion.
    Self-supervised models (simclr): linear evaluation.
    Embedding models (siamese): N-way K-shot episodes, beside raw pixels.
    Adders: digit and sum accuracy, the sum by number added and by true sum.
    """
    with render.starting():
        from mnistcli import api

    if checkpoint_arg and checkpoint and checkpoint_arg != checkpoint:
        raise UsageError(f"two checkpoints given ({checkpoint_arg!r} and --checkpoint {checkpoint!r}); give one")
    with progress.download_progress() as on_download, progress.work_progress() as on_work:
        report = api.evaluate(
            checkpoint_arg or checkpoint,
            data_dir=data_dir,
            device=device.value,
            labels_per_class=labels_per_class,
            fewshot_protocol=fewshot,
            shots=parse_ints(shots, "--shots") if shots is not None else None,
            episodes=episodes,
            map_path=map_path,
            seed=seed,
            on_download=on_download,
            on_work=on_work,
        )
    if isinstance(report, api.AdderReport):
        render.adder_json(report) if json_out else render.adder_report(report)
    elif isinstance(report, api.FewShotReport):
        render.fewshot_json(report) if json_out else render.fewshot_report(report)
        if report.map_path:
            render.note(f"wrote the embedding map to {report.map_path}")
    else:
        render.eval_json(report) if json_out else render.eval_report(report)
    remember_data_dir(data_dir)


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
    device: DeviceOpt = Device.auto,
    plot: Annotated[
        Optional[str],
        typer.Option(
            "--plot", help="Also draw each image beside its probability bars (first 12) into this PNG.", metavar="PNG"
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
    json_out: JsonOpt = False,
) -> None:
    """Classify images: the digit, its confidence and the probability of every class (with --add: and the sum)."""
    with render.starting():
        from mnistcli import api
    from mnistcli.api.predicting import check_add

    check_add(add)  # before stdin is read
    paths = image_paths(images)
    if not paths and "-" in images:
        return  # `find ... | mnist predict -` that found nothing: nothing to do
    if plot is not None:
        if add is not None:
            raise UsageError("--plot draws class probabilities; it does not apply with --add")
        from mnistcli.render import plots

        plots.check_writable(plot)
    report = api.predict(paths, checkpoint, device=device.value, add=add, show_input=show_input)
    render.predictions(report, json_out)
    if show_input is not None:
        render.shown_inputs(report.shown, show_input)
    if plot is not None and len(report.results) > len(report.failures):
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
        typer.Option("--output", "-o", metavar="FILE", help="Write all vectors to this file (see --format)."),
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
    json_out: JsonOpt = False,
) -> None:
    """Print each image's feature vector (penultimate layer, encoder output, or siamese embedding)."""
    with render.starting():
        from mnistcli import api

    paths = image_paths(images)
    if not paths and "-" in images:
        return
    report = api.embed(paths, checkpoint, device=device.value)
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
    json_out: JsonOpt = False,
) -> None:
    """Classify images by the nearest class prototype of a folder of examples (any labels, even new symbols)."""
    with render.starting():
        from mnistcli import api

    paths = image_paths(images)
    if not paths and "-" in images:
        return
    report = api.oneshot(support_dir, paths, checkpoint, device=device.value)
    render.oneshot_results(report, json_out)
    if report.failures:
        raise typer.Exit(1)
