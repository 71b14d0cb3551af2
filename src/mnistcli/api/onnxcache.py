"""A run's `model.onnx`, the model the fast path runs (api/serving.py), written beside its weights.

It is written when a run is saved, and for a run that has none (saved before, or without onnxruntime)
the first time `mnist predict`, `read`, `embed` or `oneshot` uses it on torch, provided onnxruntime is
installed to check it (and onnx, which torch's exporter needs): the file holds what `mnist export --format onnx` would (protocols/export.py:
normalisation inside, the temperature applied), and it is kept only if its answers on `CHECK_IMAGES`
seeded random images match torch's to `TOLERANCE` in probability (an embedding's value). It is written
atomically; a run folder that cannot take it (the bundled run in a read-only install) keeps none, and
the fast path falls back to torch.

The file is made with torch's TorchScript-based ONNX exporter (`dynamo=False`): 0.08 s for a small model (0.9 s
the first time in a process, torch's exporter importing its parts) where torch.export's takes 4 s (10 s the first
time), which every training would pay. Where that exporter fails, torch.export's is used. The run's name and
`stamp` (the digest of its meta.json and weights, store.fingerprint, and the mnistcli version) go into the file's
metadata: a file whose stamp is not the run's as it is now (made before its temperature was set again, by an
older mnistcli, another run's) is stale and is not used.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnistcli import __version__, store
from mnistcli.atomic import atomic_write_bytes
from mnistcli.families import get_family
from mnistcli.protocols import onnxrt
from mnistcli.protocols.export import ADDER, EMBEDDING, LOGITS, Spec, Tensors

CHECK_IMAGES = 64
TOLERANCE = 1e-5  # the largest difference in a probability (an embedding's value) the fast path may show
SEED = 0
STAMP = onnxrt.STAMP
SERVED = (LOGITS, ADDER, EMBEDDING)  # the kinds the fast path answers with (protocols/onnxrt.py's KINDS)


def stamp(run: store.Run) -> str:
    """What a model.onnx made from `run` as it is now records (`STAMP`: protocols/onnxrt.py's `stamp`)."""
    return onnxrt.stamp(store.fingerprint(run.path))


def fresh(run: store.Run, expected: str) -> bool:
    """Whether `run` has a model.onnx made from it as it is now (its `stamp`: `expected`)."""
    try:
        return onnxrt.Session(run.path / onnxrt.ONNX).metadata.get(STAMP) == expected
    except Exception:  # no file, not ours, onnxruntime failing to load: not fresh
        return False


def write(run: store.Run, model: nn.Module | None = None) -> Path | None:
    """Write `run`'s model.onnx (from `model`, or its weights loaded) unless it has a fresh one; returns the file, or
    None where none is written: onnxruntime or onnx missing (or failing), a family the fast path does not serve, a
    folder that cannot take it (read-only; a link, a folder or anything but a regular file in its place, which is
    never written through), the exporter failing, or answers that differ from torch's (a diverged run's NaN).
    Never raises: it is a cache, and the fast path falls back to torch without it."""
    try:
        spec = get_family(run.family).exported
        target = run.path / onnxrt.ONNX
        if spec not in SERVED or not onnxrt.writable() or not os.access(run.path, os.W_OK):
            return None
        if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
            return None  # a link (to anywhere: a downloaded run's), a FIFO, a folder: left as it is
        expected = stamp(run)  # before the weights are read: a run replaced meanwhile gets a stale file, never one
        if fresh(run, expected):  # that passes for fresh
            return target
        model = store.load(run, "cpu") if model is None else model
        was = next((p.device for p in model.parameters()), torch.device("cpu")), model.training
        try:
            module = spec.wrap(run, model.cpu().eval()).eval()
            payload = _checked(_export(spec, run, module, expected), expected, spec, module)
        finally:
            model.to(was[0]).train(was[1])
        return None if payload is None else atomic_write_bytes(target, payload, own=True)  # a link put there meanwhile
        # is replaced, never written through
    except Exception:  # a cache, never a reason to fail
        return None


def _export(spec: Spec, run: store.Run, module: nn.Module, expected: str) -> bytes:
    """The ONNX file's bytes for the exported `module` (spec.wrap of the model, on the CPU), `expected` (its
    `stamp`) in its metadata."""
    from mnistcli.api.exporting import metadata, quiet_exporter, to_onnx

    example = tuple(t[:2] for t in spec.make_inputs(torch.rand(2, 1, 28, 28), torch.Generator().manual_seed(SEED)))
    meta = {"run": run.name, STAMP: expected, "mnistcli_version": __version__}
    with quiet_exporter(), contextlib.redirect_stdout(io.StringIO()):
        buffer = io.BytesIO()
        try:
            torch.onnx.export(
                module,
                example,
                buffer,  # type: ignore[arg-type]  # this exporter writes to a file object too
                input_names=list(spec.inputs),
                output_names=list(spec.outputs),
                dynamic_axes={name: {0: "batch"} for name in (*spec.inputs, *spec.outputs)},
                dynamo=False,
            )
        except Exception:  # the TorchScript-based exporter cannot take it (or is gone): torch.export's
            return to_onnx(module, example, spec, {**metadata(run, spec), **meta}, run)
    import onnx

    model = onnx.load_from_string(buffer.getvalue())
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()  # type: ignore[no-any-return]


def _checked(payload: bytes, expected: str, spec: Spec, module: nn.Module) -> bytes | None:
    """`payload` if onnxruntime's answers on `CHECK_IMAGES` seeded random images match `module`'s to `TOLERANCE`."""
    import onnxruntime

    g = torch.Generator().manual_seed(SEED)
    inputs = spec.make_inputs(torch.rand(CHECK_IMAGES, 1, 28, 28, generator=g), g)
    session = onnxruntime.InferenceSession(payload, providers=["CPUExecutionProvider"])
    if session.get_modelmeta().custom_metadata_map.get(STAMP) != expected:
        return None
    got = session.run(list(spec.outputs), {n: t.numpy() for n, t in zip(spec.inputs, inputs, strict=True)})
    with torch.no_grad():
        answered = module(*inputs)
    wanted: Tensors = answered if isinstance(answered, tuple) else (answered,)
    measured: Tensors = tuple(torch.from_numpy(np.asarray(o)) for o in got)
    if spec.probabilities is not None:
        measured, wanted = spec.probabilities(measured), spec.probabilities(wanted)
    worst = max(float((a.double() - b.double()).abs().max()) for a, b in zip(measured, wanted, strict=True))
    return payload if worst <= TOLERANCE else None  # NaN fails too
