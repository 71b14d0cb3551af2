"""The `mnist` command line: options -> one api call -> render. Nothing else.

torch is imported only inside the commands that need it (through `mnistcli.api`), so
`mnist --help` and `mnist --version` stay fast. Domain errors become one red line on stderr and
exit code 1 (2 for usage errors) here, at the boundary, and nowhere else.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, Optional, TypeVar

import typer

from mnistcli import __version__, progress, render
from mnistcli.errors import MnistError, UsageError

app = typer.Typer(
    name="mnist",
    help="Train, evaluate and serve every classic family of MNIST model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
checkpoints_app = typer.Typer(help="List or remove saved checkpoints (runs).", no_args_is_help=False)
app.add_typer(checkpoints_app, name="checkpoints")

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Turn domain errors into a one-line message and an exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            render.error(str(e))
            raise typer.Exit(2) from None
        except MnistError as e:
            render.error(str(e))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            render.error("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:  # `mnist predict ... | head`: the reader left, which is not a failure
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None

    return wrapper  # type: ignore[return-value]


class Optimizer(str, Enum):
    sgd = "sgd"
    nesterov = "nesterov"
    adam = "adam"
    adamw = "adamw"


class Scheduler(str, Enum):
    none = "none"
    step = "step"
    cosine = "cosine"
    onecycle = "onecycle"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class EmbedFormat(str, Enum):
    npy = "npy"
    csv = "csv"


CheckpointOpt = Annotated[
    Optional[str],
    typer.Option(
        "--checkpoint",
        "-c",
        help="Run name, model name (its latest run) or checkpoint folder. Default: your latest run, else the bundled cnn.",
    ),
]
DeviceOpt = Annotated[Device, typer.Option(help="Where to compute.")]
DataDirOpt = Annotated[
    Optional[str],
    typer.Option(
        help="Folder of MNIST IDX files (raw or .gz). Default: $MNIST_DATA_DIR, else downloaded.", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
ImagesArg = Annotated[
    list[str],
    typer.Argument(
        help="Image files, folders (searched recursively), or - to read paths from stdin.", show_default=False
    ),
]


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mnist {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, evaluate and serve every classic family of MNIST model."""


def image_paths(items: list[str]) -> list[str]:
    """Command-line image arguments -> paths: `-` reads one path per line from stdin."""
    from mnistcli.data.images import collect_paths

    return collect_paths(items, stdin=sys.stdin)


def parse_classes(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--classes {text!r}: expected digits separated by commas, e.g. 0,1,2") from None


def parse_model_args(pairs: list[str] | None) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--arg {pair!r}: expected KEY=VALUE, e.g. width=32")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


@app.command()
@guarded
def train(
    model: Annotated[str, typer.Argument(help="Model to train (see `mnist models`).")] = "cnn",
    epochs: Annotated[
        Optional[int], typer.Option(help="Passes over the training set.", show_default="model's recipe")
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step.", show_default="model's recipe")] = None,
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
        Optional[float], typer.Option(help="NT-Xent temperature (contrastive models).", show_default="model's recipe")
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
    seed: Annotated[int, typer.Option(help="Random seed (initialisation, shuffling, split, augmentation).")] = 0,
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
        )
    render.train_summary(report)
    if json_out:
        render.train_json(report)


@app.command("eval")
@guarded
def eval_(
    checkpoint_arg: Annotated[
        Optional[str], typer.Argument(metavar="CHECKPOINT", help="Same as --checkpoint.", show_default=False)
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
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint on the 10,000 MNIST test images."""
    from mnistcli import api

    if checkpoint_arg and checkpoint and checkpoint_arg != checkpoint:
        raise UsageError(f"two checkpoints given ({checkpoint_arg!r} and --checkpoint {checkpoint!r}); give one")
    with progress.download_progress() as on_download:
        report = api.evaluate(
            checkpoint_arg or checkpoint,
            data_dir=data_dir,
            device=device.value,
            labels_per_class=labels_per_class,
            on_download=on_download,
        )
    render.eval_json(report) if json_out else render.eval_report(report)


@app.command()
@guarded
def predict(
    images: ImagesArg,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.auto,
    json_out: JsonOpt = False,
) -> None:
    """Classify images: the digit, its confidence and the probability of every class."""
    from mnistcli import api

    paths = image_paths(images)
    if not paths and "-" in images:
        return  # `find ... | mnist predict -` that found nothing: nothing to do
    report = api.predict(paths, checkpoint, device=device.value)
    render.predictions(report, json_out)
    if report.failures:
        raise typer.Exit(1)


@app.command()
@guarded
def embed(
    images: ImagesArg,
    checkpoint: CheckpointOpt = None,
    output: Annotated[
        Optional[str], typer.Option("--output", "-o", help="Write all vectors to this file (see --format).")
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
    """Print each image's feature vector (a classifier's penultimate layer)."""
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
def models(
    pattern: Annotated[str, typer.Argument(help="Shell-style filter, e.g. 'mlp*'.")] = "*",
    json_out: JsonOpt = False,
) -> None:
    """List the registered models with their task and size."""
    from mnistcli import api

    render.models_table(api.models(pattern), json_out)


@checkpoints_app.callback(invoke_without_command=True)
@guarded
def checkpoints_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List saved runs: name, model, test accuracy, date and size."""
    if ctx.invoked_subcommand is None:
        from mnistcli import api

        render.checkpoints_table(api.checkpoints(), json_out)


@checkpoints_app.command("rm")
@guarded
def checkpoints_rm(names: Annotated[list[str], typer.Argument(help="Run names to delete.")]) -> None:
    """Delete runs from the store."""
    from mnistcli import api

    failed = False
    for name in names:
        try:
            run = api.remove_checkpoint(name)
            render.note(f"removed {run.name} ({run.path})")
        except MnistError as e:
            render.error(str(e))
            failed = True
    if failed:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except BrokenPipeError:  # `mnist predict ... | head`: the reader left; that is not an error
        sys.stderr.close()
        sys.exit(0)
