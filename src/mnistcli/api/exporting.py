"""`mnist export`: a run's model as one self-contained ONNX or TorchScript file, checked against torch.

The file holds the model as `mnist predict` uses it: normalisation inside (every mnistcli model normalises its
own input), float32 images (N, 1, 28, 28) in [0, 1] (light ink on dark), a dynamic batch axis, and a calibrated
family's temperature applied to its logits, so that softmax of the file's logits is `mnist predict`'s
probability. The run's description goes in with it: ONNX `metadata_props`, TorchScript `meta.json`.

Then, as timm's export script does, the file is run on a few hundred MNIST test images (seeded synthetic ones when
no MNIST is found and none was named) beside torch's model; the largest differences are reported, and a file whose
probabilities differ from torch's by more than `TOLERANCE` is not written (nor is one of a model whose own outputs
are not numbers: a diverged run). What each family's file takes and gives, and which keys of the run's description
it adds, is its `exported` (protocols/export.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import stat
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnistcli import __version__, settings, store
from mnistcli.api.common import a_model, load_checkpoint
from mnistcli.atomic import descriptor, mode_of, write_output
from mnistcli.data import mnist
from mnistcli.errors import DataError, MnistError, UsageError
from mnistcli.families import families_where, get_family
from mnistcli.protocols.export import Spec, Tensors
from mnistcli.registry import saved_args
from mnistcli.reports import ExportReport

FORMATS = ("onnx", "torchscript")
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript"}
EXTRA = "--format onnx needs the export extra: pip install 'mnistcli[export]'"
EXTRA_MODULES = ("onnx", "onnxscript", "onnxruntime")
PARITY_IMAGES = 300  # test images the file and torch both answer ("a few hundred", as timm checks)
TOLERANCE = 1e-4  # the largest difference in a probability (an embedding's value) the file may show
SEED = 0  # draws the parity images, the adder's numbers, the bags' sizes and any synthetic images


class ParityError(MnistError):
    """The exported file's answers differ from torch's by more than the tolerance."""


def output_format(format: str | None, output: str) -> str:
    """The format asked for, or the one `output`'s suffix names (.onnx; .pt, .pth, .ts). Raises `UsageError` for an
    unknown format, a suffix that names none when none is asked for, and one that names another."""
    suffix = Path(output).suffix.lower()
    named = SUFFIXES.get(suffix)
    if format is None:
        if named is None:
            raise UsageError(f"which format for {output}? give --format {' or '.join(FORMATS)}")
        format = named
    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r}; choose {' or '.join(FORMATS)}")
    if named is not None and named != format:
        raise UsageError(f"-o {output}: the suffix {suffix} says {named}, not {format}; change the suffix or --format")
    return format


def export(
    ref: str | None,
    output: str,
    format: str | None = None,
    data_dir: str | None = None,
) -> ExportReport:
    """Export run `ref` (None: as `mnist eval` picks it) to `output` as `format` (None: from its suffix), after
    checking the file's answers against torch's (see the module docstring). Returns an `ExportReport`.

    Raises `UsageError` for a format, an output or a family that cannot be exported (or the missing extra),
    `DataError` for a named MNIST folder that is not one, `ParityError` when the file's probabilities differ from
    torch's by more than `TOLERANCE` (nothing is written), `MnistError` when the model's own outputs are not numbers
    or the exporter fails, `FileProblem` when the file cannot be written."""
    t0 = time.perf_counter()
    _check_output(output)  # first: `-o -` is refused as standard output, whatever its format
    format = output_format(format, output)
    if format == "onnx" and any(importlib.util.find_spec(m) is None for m in EXTRA_MODULES):
        raise UsageError(EXTRA)
    run, model, _ = load_checkpoint(ref, None, "cpu")
    family = get_family(run.family)
    spec = family.exported
    if spec is None:
        known = ", ".join(sorted(families_where(lambda f: f.exported is not None)))
        raise UsageError(f"{run.name!r} is {a_model(run.family)}; mnist export knows {known} models only")
    module = spec.wrap(run, model.eval()).eval()  # eval: batch norm with its running statistics, as predict uses it
    images, source = parity_images(data_dir)
    inputs = spec.make_inputs(images, torch.Generator().manual_seed(SEED))
    example = tuple(t[:2] for t in inputs)  # two: a batch of one would be fixed at 1 by the exporter
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    if not all(bool(torch.isfinite(t).all()) for t in expected):  # before any export: no file could match it
        raise MnistError(f"{run.name}: the model's output is not a number: the run diverged; nothing was written")
    meta = metadata(run, spec)
    with quiet_exporter():
        payload = (
            to_onnx(module, example, spec, meta, run) if format == "onnx" else _torchscript(module, example, meta, run)
        )
        outputs, read_meta = _run(format, payload, spec, inputs, run)
    out_diff = _largest(outputs, expected)
    p_diff = None if spec.probabilities is None else _largest(spec.probabilities(outputs), spec.probabilities(expected))
    measured = out_diff if p_diff is None else p_diff
    what = "embedding value" if p_diff is None else "probability"
    if not measured <= TOLERANCE:  # NaN fails too
        raise ParityError(
            f"the {format} file's {what} differs from torch's by {measured:.3g} (more than {TOLERANCE:g}) on"
            f" {len(inputs[0])} {source}; {output} was not written"
        )
    written = write_output(output, lambda f: f.write(payload))
    return ExportReport(
        run=run,
        path=str(written),
        format=format,
        size_bytes=len(payload),
        inputs=list(spec.inputs),
        outputs=list(spec.outputs),
        metadata=read_meta,
        compared=len(inputs[0]),
        compared_unit="bags" if spec.inputs[0] == "bags" else "images",
        data=source,
        max_output_diff=out_diff,
        max_probability_diff=p_diff,
        tolerance=TOLERANCE,
        seconds=time.perf_counter() - t0,
    )


def _check_output(output: str) -> None:
    """Refuse, before any work, an output that cannot take the file: standard output (the summary goes there),
    standard error (the messages go there), a folder. A FIFO or a device is written to as it is; anything else that
    is there and not a regular file is refused when it is written (atomic.write_output)."""
    fd = descriptor(output)
    if fd in (1, 2):
        goes = "the summary goes to standard output" if fd == 1 else "messages go to standard error"
        raise UsageError(f"-o {output}: the export is a binary file and {goes}; name a file")
    mode = mode_of(output, f"-o {output}")
    if mode is not None and stat.S_ISDIR(mode):
        raise UsageError(f"-o {output}: it is a folder; name the file to write")


def parity_images(data_dir: str | None) -> tuple[torch.Tensor, str]:
    """(float images (N, 1, 28, 28) in [0, 1], what they are): `PARITY_IMAGES` MNIST test images drawn with `SEED`,
    from `data_dir` or where MNIST is found without downloading (as `mnist eval` finds it); seeded synthetic ones
    where none is found. A named folder that fails (`data_dir`, $MNIST_DATA_DIR, the remembered one) is an error, as
    in `mnist eval`: `UsageError` for `data_dir`, `DataError` for the others."""
    g = torch.Generator().manual_seed(SEED)
    try:
        folder = mnist.resolve_dir(data_dir, download=False, splits=("test",))
    except DataError:
        if data_dir is not None or os.environ.get(mnist.ENV_DATA_DIR) or settings.load()["data_dir"] is not None:
            raise
        synthetic = torch.rand(PARITY_IMAGES, 1, 28, 28, generator=g)
        return synthetic, "synthetic images (no MNIST found)"
    split = mnist.load_split("test", folder)
    pick = torch.randperm(len(split.images), generator=g)[:PARITY_IMAGES].numpy()
    images = torch.from_numpy(np.ascontiguousarray(split.images[pick])).float().div(255).unsqueeze(1)
    return images, "MNIST test images"


def metadata(run: store.Run, spec: Spec) -> dict[str, Any]:
    """The run's description that goes into the file: every file's keys and those of its kind (`spec.metadata`:
    classifiers their classes and temperature, ...); docs/usage.md lists them."""
    info = run.info
    accuracy = info.results.test_accuracy
    return {
        "run": run.name,
        "model": run.model,
        "model_args": saved_args(run.model, info.model.args),  # as built: an argument gained later, named
        "family": run.family,
        # a float32 measured and stored as a double (0.9900000095367432): six significant digits say it
        "test_accuracy": accuracy if accuracy is None else float(f"{accuracy:.6g}"),
        "test_measure": info.results.test_measure,
        **spec.metadata(run),
        "mnistcli_version": __version__,
        "trained_with": info.versions.get("mnistcli"),
        "preprocessing": info.preprocessing,
        "inputs": ", ".join(spec.inputs),
        "outputs": spec.describe,
    }


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """No warnings (TorchScript's FutureWarnings, the tracer's notes on constants) and no log pages from the
    exporters; their failures still raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(previous)


def to_onnx(module: nn.Module, example: Tensors, spec: Spec, meta: dict[str, Any], run: store.Run) -> bytes:
    """The ONNX file's bytes (torch.export, one self-contained file), `meta` in its metadata_props as strings."""
    batch = torch.export.Dim("batch")
    extra = spec.dynamic or tuple({} for _ in spec.inputs)
    dims = {name: torch.export.Dim(name) for axes in extra for name in axes.values()}
    shapes = tuple({0: batch, **{axis: dims[name] for axis, name in axes.items()}} for axes in extra)
    chatter = io.StringIO()  # a failing torch.export prints the graph it gave up on
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            program = torch.onnx.export(
                module,
                example,
                None,
                input_names=list(spec.inputs),
                output_names=list(spec.outputs),
                dynamic_shapes=shapes,
                verbose=False,
            )
    except Exception as e:  # the exporter raises many kinds, each with pages of explanation
        limit = get_family(run.family).onnx_limit
        if limit:
            raise UsageError(f"{run.name!r} cannot be exported to ONNX: {limit}") from None
        raise MnistError(f"the ONNX exporter failed on {run.name!r}: {_first_line(e)}") from None
    assert program is not None
    for key, value in meta.items():
        program.model.metadata_props[key] = value if isinstance(value, str) else json.dumps(value)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        program.save(path, external_data=False)
        return path.read_bytes()


def _torchscript(module: nn.Module, example: Tensors, meta: dict[str, Any], run: store.Run) -> bytes:
    """The TorchScript file's bytes (traced on the CPU: the batch axis stays free), `meta` as its `meta.json` extra
    file. Raises `MnistError` (one line) when tracing fails."""
    try:
        traced = torch.jit.trace(module, example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={"meta.json": json.dumps(meta)})
    except Exception as e:  # the tracer raises RuntimeErrors pages long
        raise MnistError(f"the TorchScript exporter failed on {run.name!r}: {_first_line(e)}") from None
    return buffer.getvalue()


def _run(format: str, payload: bytes, spec: Spec, inputs: Tensors, run: store.Run) -> tuple[Tensors, dict[str, Any]]:
    """`_run_onnx` or `_run_torchscript`; a file that fails to run is a `MnistError` (one line), not a traceback."""
    try:
        return (_run_onnx if format == "onnx" else _run_torchscript)(payload, spec, inputs)
    except Exception as e:  # onnxruntime's and TorchScript's own errors, pages long
        raise MnistError(f"the exported {format} file of {run.name!r} failed to run: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _run_onnx(payload: bytes, spec: Spec, inputs: Tensors) -> tuple[Tensors, dict[str, Any]]:
    """(the file's outputs on `inputs`, its metadata as read back) through onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(payload, providers=["CPUExecutionProvider"])
    feed = {name: t.numpy() for name, t in zip(spec.inputs, inputs, strict=True)}
    outputs = tuple(torch.from_numpy(np.asarray(o)) for o in session.run(list(spec.outputs), feed))
    return outputs, dict(session.get_modelmeta().custom_metadata_map)


def _run_torchscript(payload: bytes, spec: Spec, inputs: Tensors) -> tuple[Tensors, dict[str, Any]]:
    """(the file's outputs on `inputs`, its meta.json as read back) through torch.jit.load."""
    extra = {"meta.json": ""}
    loaded = torch.jit.load(io.BytesIO(payload), map_location="cpu", _extra_files=extra)
    with torch.no_grad():
        outputs = loaded(*inputs)
    return (outputs if isinstance(outputs, tuple) else (outputs,)), json.loads(extra["meta.json"])


def _largest(a: Tensors, b: Tensors) -> float:
    """The largest absolute difference between corresponding tensors (NaN if any value is not a number)."""
    diffs = [(x.double() - y.double()).abs().max() for x, y in zip(a, b, strict=True)]
    return float(torch.stack(diffs).max())
