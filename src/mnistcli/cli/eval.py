"""`mnist eval`: judge a checkpoint on the MNIST test images by its family's protocol."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mnistcli import render
from mnistcli.cli import complete, helptext
from mnistcli.cli.common import CheckpointOpt, DataDirOpt, Device, DeviceOpt, JsonOpt, app, guarded, parse_ints
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
            help="Draws the few-shot episodes, the --labels-per-class images, the number paired with each test"
            " image for an adder, or a MIL model's test bags.",
            show_default="0; an adder's training seed",
            parser=helptext.seed,
        ),
    ] = None,
    map_path: Annotated[
        Optional[str],
        typer.Option(
            "--map", help="Few-shot: write maps of the test embeddings (t-SNE and PCA) to this PNG.", metavar="PNG"
        ),
    ] = None,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Classifiers: test-time augmentation; average the logits of each image and four copies shifted by"
            " one pixel.",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint on the 10,000 MNIST test images.

    Classifiers: accuracy, per class, confusion. Ensembles: also every member's accuracy.
    Self-supervised models (simclr): linear evaluation.
    Embedding models (siamese): N-way K-shot episodes, beside raw pixels.
    Adders: digit and sum accuracy, the sum by number added and by true sum.
    Multiple-instance models (mil): bag AUC on 1,000 test bags, and where attention points.
    """
    if checkpoint_arg and checkpoint and checkpoint_arg != checkpoint:
        raise UsageError(f"two checkpoints given ({checkpoint_arg!r} and --checkpoint {checkpoint!r}); give one")
    with render.starting():
        from mnistcli import api

        api.load("evaluate")  # torch, under the spinner

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
            tta=tta,
            on_download=on_download,
            on_work=on_work,
        )
    if isinstance(report, api.BagsReport):
        render.bags_json(report) if json_out else render.bags_report(report)
    elif isinstance(report, api.AdderReport):
        render.adder_json(report) if json_out else render.adder_report(report)
    elif isinstance(report, api.FewShotReport):
        render.fewshot_json(report) if json_out else render.fewshot_report(report)
        if report.map_path:
            render.note(f"wrote the embedding map to {report.map_path}")
    else:
        render.eval_json(report) if json_out else render.eval_report(report)
    remember_data_dir(data_dir)
