"""`mnist predict`, `read`, `embed` and `oneshot`: on onnxruntime when they can (the fast path), else on torch.

The fast path imports no torch (about 2 s of a command's start, docs/benchmarks.md): it finds the run as
the torch path does (store.resolve, which needs no torch, with the families' options unchecked: store/runs.py),
opens the run's `model.onnx` (written when the run was saved or first used: api/onnxcache.py) and answers
with protocols/onnxrt.py, to 1e-5 in probability of torch's answer (tests/test_fast.py).

`backend`: "auto" takes the fast path when it can and torch otherwise (and then writes the run's model.onnx
for the next time); "onnx" takes the fast path or says in one line why it cannot; "torch" never takes it.
What the fast path does not do goes to torch: --tta, --show-input, bags (--bag, MIL runs), --device cuda or
mps, a classifier's features (its file holds its logits), a run without a model.onnx of its own, and any
error (which torch then says as it always has).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from mnistcli import store
from mnistcli.api.common import a_model, answer_images, finite_only, match, read_images, read_support, unreadable
from mnistcli.api.reading import NO_IMAGES, read_with
from mnistcli.config import Backend, PredictOptions
from mnistcli.data.images import collect_paths
from mnistcli.errors import ImageError, MnistError, UsageError
from mnistcli.protocols import onnxrt
from mnistcli.reports import (
    EmbedReport,
    Failure,
    Match,
    OneShotReport,
    Prediction,
    PredictReport,
    ReadReport,
    SumPrediction,
)

# The families each command takes by default (the torch path asks the families; tests/test_fast.py checks that
# these are what they say, without importing torch here).
PREDICTS = {"classify", "ensemble"}  # `predicts`, with no option to give
ADDS = {"adder"}  # `predicts` with --add
CLASSIFIES = {"classify", "ensemble"}  # `classifies`: `mnist read`
FEWSHOT = {"triplet"}  # `fewshot_by_default`: `mnist oneshot` with no checkpoint named
SUGGEST = {"predict": "cnn", "add": "adder", "read": "cnn", "oneshot": "siamese"}  # what to train, when none is
DEFAULT_SCALE = 10.0  # protocols/fewshot.py's: a checkpoint's one-shot confidence scale when it calibrated none
T = TypeVar("T")
EXTRA = "onnxruntime is not installed (pip install 'mnistcli[fast]')"


class NoFastPath(Exception):
    """What the fast path cannot do for this command (the reason, for --backend onnx to say)."""


def check_add(add: int | None, bag: bool = False) -> PredictOptions:
    """`mnist predict`'s options; raises `UsageError` unless `add` is None or a number 0-9, or for --add with --bag."""
    return PredictOptions(add=add, bag=bag or None)


def check_backend(backend: str, device: str) -> None:
    """Raise `UsageError` for an unknown backend, or --backend onnx on a device other than the CPU."""
    if backend not in {b.value for b in Backend}:
        raise UsageError(f"--backend {backend!r}: choose {', '.join(b.value for b in Backend)}")
    if backend == "onnx" and device not in ("auto", "cpu"):
        raise UsageError(f"--backend onnx runs on the CPU: drop --device {device} (or use --backend torch)")


def _fast(backend: str, device: str, answer: Callable[[], T]) -> T | None:
    """`answer()` on the fast path when `backend` allows it; None when torch is to answer instead (auto: anything
    the fast path cannot do, errors too, which torch then says). Raises `UsageError` saying why not for onnx."""
    check_backend(backend, device)
    if backend == "torch":
        return None
    try:
        if not onnxrt.available():
            raise NoFastPath(EXTRA)
        if device not in ("auto", "cpu"):
            raise NoFastPath(f"it runs on the CPU, not on --device {device}")
        return answer()
    except NoFastPath as e:
        if backend == "onnx":
            raise UsageError(f"--backend onnx: {e}") from None
        return None
    except MnistError:
        if backend == "onnx":
            raise
        return None
    except Exception as e:  # onnxruntime failing on a file it loaded: torch answers (auto), or one line (onnx)
        if backend == "onnx":
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise MnistError(f"onnxruntime failed: {first}") from None
        return None


class _Answer(Protocol):
    run: store.Run


A = TypeVar("A", bound=_Answer)


def _answer(backend: str, device: str, fast: Callable[[], A], slow: Callable[[], A]) -> A:
    """`fast()` when `backend` allows it and it can (`_fast`), else `slow()` (torch), after which (backend auto) the
    run that answered gets its model.onnx for the next time (api/onnxcache.py)."""
    answered = _fast(backend, device, fast)
    if answered is not None:
        return answered
    report = slow()
    if backend == "auto" and onnxrt.available():
        from mnistcli.api import onnxcache

        onnxcache.write(report.run)
    return report


def _run(ref: str | None, families: set[str] | None, suggest: str = "cnn") -> store.Run:
    """The run `ref` names, or the latest of `families`, as the torch path finds it. Raises `NoFastPath` for a run
    of another family (the torch path says what fits), `CheckpointError` for none (suggesting `mnist train
    <suggest>`)."""
    with store.options_unchecked():
        run = store.resolve(ref, families, suggest=suggest)
    if families is not None and run.family not in families:
        raise NoFastPath(
            f"{run.name!r} is {a_model(run.family)}; here it answers {' or '.join(sorted(families))} models"
        )
    return run


def _session(run: store.Run, kind: str) -> onnxrt.Session:
    """`run`'s model.onnx, opened. Raises `NoFastPath` if it has none written for it, or of another `kind`."""
    path = run.path / onnxrt.ONNX
    if not os.path.lexists(path):
        raise NoFastPath(f"run {run.name!r} has no {onnxrt.ONNX} yet ({_how_to_write()})")
    try:
        session = onnxrt.Session(path)
    except MnistError as e:
        raise NoFastPath(str(e)) from None
    if session.metadata.get(onnxrt.STAMP) != onnxrt.stamp(store.fingerprint(run.path)):
        raise NoFastPath(f"{path} was not made from this run as it is now ({_how_to_write()})")
    if session.kind != kind:
        what = {"logits": "a classifier's logits", "adder": "an adder's heads", "embedding": "an embedding"}
        raise NoFastPath(f"{path} holds {what[session.kind]}; this command needs {what[kind]}")
    return session


def _how_to_write() -> str:
    """How a run gets its model.onnx here (a read-only folder never does)."""
    if onnxrt.writable():
        return "one use with --backend auto writes it, where the run's folder can be written to"
    return "writing it needs the onnx package too, which torch's exporter uses: pip install 'mnistcli[fast]'"


def predict(
    paths: Sequence[str],
    ref: str | None = None,
    device: str = "auto",
    add: int | None = None,
    show_input: str | None = None,
    bag: bool = False,
    tta: bool = False,
    backend: str = "auto",
) -> PredictReport:
    """`mnist predict` (api/predicting.py's `predict`, which says what each option does) on `backend`."""
    check_add(add, bag)

    def fast() -> PredictReport:
        if tta or show_input is not None or bag:
            raise NoFastPath("--tta, --show-input and --bag run on torch (--backend auto or torch)")
        if not paths:
            raise UsageError(NO_IMAGES)
        run = _run(ref, *((ADDS, SUGGEST["add"]) if add is not None else (PREDICTS, SUGGEST["predict"])))
        session = _session(run, "adder" if add is not None else "logits")
        loaded, _ = read_images(collect_paths(paths))

        def digits(ok: list[str], images: np.ndarray) -> list[Prediction]:
            return [Prediction.of(p, q) for p, q in zip(ok, onnxrt.softmax(session.run(images)[0]), strict=True)]

        def sums(ok: list[str], images: np.ndarray) -> list[SumPrediction]:
            assert add is not None
            digit, total = (onnxrt.softmax(o) for o in session.run(images, add))
            return [SumPrediction.of(p, add, d, s) for p, d, s in zip(ok, digit, total, strict=True)]

        results: list[Prediction | SumPrediction | Failure] = []
        results += (
            finite_only(answer_images(loaded, digits)) if add is None else finite_only(answer_images(loaded, sums))
        )
        return PredictReport(run, [*results])

    def slow() -> PredictReport:
        from mnistcli.api import predicting

        return predicting.predict(paths, ref, device, add, show_input, bag, tta)

    return _answer(backend, device, fast, slow)


def read(paths: Sequence[str], ref: str | None = None, device: str = "auto", backend: str = "auto") -> ReadReport:
    """`mnist read` (api/reading.py) on `backend`."""

    def fast() -> ReadReport:
        if not paths:
            raise UsageError(NO_IMAGES)
        run = _run(ref, CLASSIFIES, SUGGEST["read"])
        session = _session(run, "logits")
        return read_with(run, paths, lambda images: onnxrt.softmax(session.run(images)[0]))

    def slow() -> ReadReport:
        from mnistcli.api import reading

        return reading.read(paths, ref, device)

    return _answer(backend, device, fast, slow)


def embed(paths: Sequence[str], ref: str | None = None, device: str = "auto", backend: str = "auto") -> EmbedReport:
    """`mnist embed` (api/predicting.py) on `backend`: the fast path for embedding models (siamese, simclr)."""

    def fast() -> EmbedReport:
        if not paths:
            raise UsageError(NO_IMAGES)
        session = _session(run := _run(ref, None), "embedding")
        loaded, stacked = read_images(paths)
        vectors = session.run(stacked)[0] if len(stacked) else np.zeros((0, session.width), dtype=np.float32)
        embedded = [p for p, item in loaded if not isinstance(item, ImageError)]
        return EmbedReport(run, embedded, vectors, unreadable(loaded))

    def slow() -> EmbedReport:
        from mnistcli.api import predicting

        return predicting.embed(paths, ref, device)

    return _answer(backend, device, fast, slow)


def oneshot(
    support_dir: str | Path,
    paths: Sequence[str],
    ref: str | None = None,
    device: str = "auto",
    backend: str = "auto",
) -> OneShotReport:
    """`mnist oneshot` (api/predicting.py) on `backend`: the fast path for embedding models."""

    def fast() -> OneShotReport:
        if not paths:
            raise UsageError(NO_IMAGES)
        support, skipped = read_support(support_dir)
        run = _run(ref, None if ref else FEWSHOT, SUGGEST["oneshot"])
        session = _session(run, "embedding")
        labels = list(support)
        counts = [len(support[c]) for c in labels]
        features = session.run(np.concatenate([support[c] for c in labels]))[0]
        protos = onnxrt.prototypes(features, np.repeat(np.arange(len(labels)), counts), len(labels))
        calibrated = run.info.oneshot_scale is not None
        scale = run.info.oneshot_scale or DEFAULT_SCALE
        loaded, _ = read_images(paths)

        def nearest(ok: list[str], images: np.ndarray) -> list[Match]:
            d2 = onnxrt.distances(session.run(images)[0], protos)
            conf = onnxrt.confidences(d2, scale)
            return [match(p, labels, d, c) for p, d, c in zip(ok, d2.tolist(), conf.tolist(), strict=True)]

        results = finite_only(answer_images(loaded, nearest))
        return OneShotReport(run, dict(zip(labels, counts, strict=True)), scale, calibrated, results, skipped)

    def slow() -> OneShotReport:
        from mnistcli.api import predicting

        return predicting.oneshot(support_dir, paths, ref, device)

    return _answer(backend, device, fast, slow)
