"""`mnist export`: a run's model as one ONNX or TorchScript file, checked against torch before it is written."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mnistcli import render
from mnistcli.cli import complete
from mnistcli.cli.common import CheckpointOpt, JsonOpt, app, guarded
from mnistcli.errors import UsageError


@app.command("export")
@guarded
def export(
    checkpoint_arg: Annotated[
        Optional[str],
        typer.Argument(
            metavar="RUN",
            help="Same as --checkpoint.",
            show_default=False,
            autocompletion=complete.checkpoint_refs,
        ),
    ] = None,
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="The file to write (replaced atomically).", metavar="FILE"),
    ] = ...,  # type: ignore[assignment]
    format: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            "-f",
            help="onnx or torchscript.",
            metavar="onnx|torchscript",
            show_default="from FILE's suffix: .onnx; .pt, .pth, .ts",
        ),
    ] = None,
    checkpoint: CheckpointOpt = None,
    data_dir: Annotated[
        Optional[str],
        typer.Option(
            metavar="DIR",
            help="Folder of MNIST IDX files for the check. Default: $MNIST_DATA_DIR, else the remembered folder, else"
            " the download cache (nothing is downloaded); a named folder without MNIST is an error; none named or"
            " cached: 300 seeded synthetic images.",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Export a run's model to ONNX or TorchScript, with its description inside.

    The file takes float32 images (N, 1, 28, 28) in [0, 1], white ink on black, any batch size; it normalises them.
    Classifiers give logits (their softmax: mnist predict's probabilities); adders digit and sum logits (NaN sum
    logits for a number outside 0-9); embedding models their embedding; MIL models a bag logit and each image's
    attention (a bag with no image: NaN logit, zero attention). TorchScript files are traced on the CPU.
    The file is checked first on 300 MNIST test images: if its probabilities differ from torch's by more than 1e-4,
    it is not written (exit 1). ONNX needs the export extra: pip install 'mnistcli\\[export]'.
    """
    if checkpoint_arg and checkpoint and checkpoint_arg != checkpoint:
        raise UsageError(f"two checkpoints given ({checkpoint_arg!r} and --checkpoint {checkpoint!r}); give one")
    with render.starting():
        from mnistcli import api

        api.load("export")  # torch, under the spinner

    report = api.export(checkpoint_arg or checkpoint, output, format=format, data_dir=data_dir)
    render.export_json(report) if json_out else render.export_summary(report)
