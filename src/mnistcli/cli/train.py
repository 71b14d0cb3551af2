"""`mnist train`: options -> a config -> `api.train` -> the summary."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mnistcli import progress, render
from mnistcli.cli.common import (
    DataDirOpt,
    Device,
    DeviceOpt,
    JsonOpt,
    Mining,
    Optimizer,
    Scheduler,
    app,
    guarded,
    parse_classes,
    parse_model_args,
)
from mnistcli.cli.settings import remember_data_dir


@app.command()
@guarded
def train(
    model: Annotated[str, typer.Argument(help="Model to train (see `mnist models`).")] = "cnn",
    epochs: Annotated[
        Optional[int], typer.Option(help="Passes over the training set.", show_default="model's recipe")
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            help="Images per step (metric models: labelled images per class-balanced batch).",
            show_default="model's recipe",
        ),
    ] = None,
    lr: Annotated[
        Optional[float], typer.Option(help="Learning rate (peak rate for onecycle).", show_default="model's recipe")
    ] = None,
    optimizer: Annotated[Optional[Optimizer], typer.Option(help="Optimizer.", show_default="model's recipe")] = None,
    momentum: Annotated[
        Optional[float],
        typer.Option(
            help="Momentum for sgd and nesterov (onecycle cycles it between 0.85 and 0.95).", show_default="0.9"
        ),
    ] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Weight decay.", show_default="model's recipe")] = None,
    scheduler: Annotated[
        Optional[Scheduler],
        typer.Option(help="Learning-rate schedule, stepped per batch.", show_default="model's recipe"),
    ] = None,
    label_smoothing: Annotated[
        Optional[float], typer.Option(help="Cross-entropy label smoothing.", show_default="model's recipe")
    ] = None,
    temperature: Annotated[
        Optional[float],
        typer.Option(help="NT-Xent temperature (contrastive and metric models).", show_default="model's recipe"),
    ] = None,
    margin: Annotated[
        Optional[float],
        typer.Option(
            help="Triplet-loss margin, on squared distances of unit vectors (metric models).", show_default="0.2"
        ),
    ] = None,
    mining: Annotated[
        Optional[Mining], typer.Option(help="Triplet mining in each batch (metric models).", show_default="batch-hard")
    ] = None,
    ssl_weight: Annotated[
        Optional[float],
        typer.Option(
            help="Metric models: weight of self-supervision (NT-Xent) on unlabelled training images; 0 turns it off.",
            show_default="model's recipe",
        ),
    ] = None,
    augment: Annotated[
        Optional[bool],
        typer.Option(
            "--augment/--no-augment",
            help="Random rotation, scale and shift of each batch.",
            show_default="model's recipe",
        ),
    ] = None,
    val_split: Annotated[
        Optional[float],
        typer.Option(
            help="Fraction of the training set held out for validation.", show_default="0, or 0.1 with --early-stopping"
        ),
    ] = None,
    early_stopping: Annotated[
        Optional[int],
        typer.Option(
            metavar="PATIENCE",
            help="Stop after PATIENCE epochs without a better validation accuracy; keeps the best weights.",
            show_default="off",
        ),
    ] = None,
    target_accuracy: Annotated[
        Optional[float],
        typer.Option(
            help="Stop as soon as held-out accuracy (validation split, else test set) reaches this, e.g. 0.99."
        ),
    ] = None,
    check_every: Annotated[
        Optional[float],
        typer.Option(help="With --target-accuracy: check every this fraction of an epoch.", show_default="0.25"),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(help="Random seed (initialisation, shuffling, split, augmentation).", min=0, max=2**63 - 1),
    ] = 0,
    device: DeviceOpt = Device.auto,
    classes: Annotated[
        Optional[str], typer.Option(help="Train only on these digits, e.g. 0,1,2.", show_default="all")
    ] = None,
    per_class: Annotated[
        Optional[int], typer.Option(help="At most this many training images per class.", show_default="all")
    ] = None,
    arg: Annotated[
        Optional[list[str]],
        typer.Option("--arg", metavar="KEY=VALUE", help="Model argument, e.g. --arg width=32 (repeatable)."),
    ] = None,
    data_dir: DataDirOpt = None,
    name: Annotated[Optional[str], typer.Option(help="Name of the run.", show_default="MODEL-DATE-TIME")] = None,
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard", help="Also write TensorBoard event files into the run folder (needs tensorboard)."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a model on MNIST and save it as a checkpoint."""
    from mnistcli import api

    options = dict(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer.value if optimizer else None,
        momentum=momentum,
        weight_decay=weight_decay,
        scheduler=scheduler.value if scheduler else None,
        label_smoothing=label_smoothing,
        temperature=temperature,
        margin=margin,
        mining=mining.value if mining else None,
        ssl_weight=ssl_weight,
        augment=augment,
        val_split=val_split,
        early_stopping=early_stopping,
        target_accuracy=target_accuracy,
        check_every=check_every,
        seed=seed,
        device=device.value,
        classes=parse_classes(classes),
        per_class=per_class,
    )
    with progress.download_progress() as on_download, progress.TrainProgress() as bar:
        report = api.train(
            model,
            options,
            parse_model_args(arg),
            name=name,
            data_dir=data_dir,
            on_step=bar.step,
            on_epoch=bar.epoch,
            on_download=on_download,
            tensorboard=tensorboard,
        )
    render.train_summary(report)
    if json_out:
        render.train_json(report)
    remember_data_dir(data_dir)
