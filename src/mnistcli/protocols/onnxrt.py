"""Inference over numpy with onnxruntime: the torch-free counterpart of protocols/inference.py, for the fast path.

A run's `model.onnx` (api/onnxcache.py writes it beside the weights) is the model as `mnist export` writes it
(protocols/export.py): a classifier's logits already divided by its temperature, an adder's two heads of an
image and a number, an embedding model's features. Here it runs in batches on the CPU, and the rest of what
`mnist predict` computes (softmax, prototypes, distances) is done in numpy, in float32 as torch does it, so
that the answers match the torch path's to 1e-5 in probability (tests/test_fast.py checks it). Nothing here
imports torch; onnxruntime is imported when a session is opened.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from mnistcli import __version__
from mnistcli.data.files import open_regular
from mnistcli.errors import CheckpointError, FileProblem

ONNX = "model.onnx"  # beside a run's weights
EVAL_BATCH = 1000  # images per run of the session (as protocols/inference.py)
STAMP = "run_fingerprint"  # the metadata entry naming the run files the model was made from (store.fingerprint)
MAX_BYTES = 512 * 2**20  # an mnistcli model's file is a few MiB; an ensemble's tens

# What the file of each kind takes and gives (protocols/export.py's LOGITS, ADDER and EMBEDDING).
KINDS = {
    (("image",), ("logits",)): "logits",
    (("image", "number"), ("digit_logits", "sum_logits")): "adder",
    (("image",), ("embedding",)): "embedding",
}


class Unreadable(FileProblem):
    """A run's model.onnx cannot be opened as a regular file."""


def stamp(fingerprint: str) -> str:
    """What a model.onnx made from a run records (`STAMP`): the digest of the run's meta.json and weights
    (store.fingerprint) and the mnistcli that made it, as a newer one may build its models otherwise."""
    return f"{fingerprint} {__version__}"


def _found(module: str) -> bool:
    """Whether `module` is installed (found, not imported: onnxruntime's import costs a tenth of a second)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails, a module blocked in sys.modules
        return False


def available() -> bool:
    """Whether onnxruntime is installed: the fast path can run."""
    return _found("onnxruntime")


def writable() -> bool:
    """Whether a model.onnx can be made here: onnxruntime to check it, and onnx, which torch's exporter needs."""
    return available() and _found("onnx")


class Session:
    """A run's model.onnx opened for inference on the CPU: what kind it is, its metadata, and its outputs."""

    def __init__(self, path: Path) -> None:
        """Open `path`. Raises `CheckpointError` if it is not a regular file onnxruntime can load as one of `KINDS`."""
        import onnxruntime

        try:
            with open_regular(path, Unreadable) as f:  # a FIFO or a device in its place is refused, never waited on
                if os.fstat(f.fileno()).st_size > MAX_BYTES:
                    raise CheckpointError(f"{path}: larger than any model mnistcli writes")
                payload = f.read(MAX_BYTES + 1)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read it ({e.strerror or e})") from None
        except Unreadable as e:
            raise CheckpointError(str(e)) from None
        if len(payload) > MAX_BYTES:
            raise CheckpointError(f"{path}: larger than any model mnistcli writes")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            options.intra_op_num_threads = int(threads)  # as torch would take them
        try:
            self._session = onnxruntime.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own kinds for a file it cannot load
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"{path}: not a model onnxruntime can run ({first})") from None
        inputs = tuple(i.name for i in self._session.get_inputs())
        outputs = tuple(o.name for o in self._session.get_outputs())
        kind = KINDS.get((inputs, outputs))
        if kind is None:
            raise CheckpointError(f"{path}: takes {', '.join(inputs)} and gives {', '.join(outputs)}: not a model")
        self.kind = kind
        width = self._session.get_outputs()[0].shape[-1]
        self.width = width if isinstance(width, int) else 0  # an embedding's length (a classifier's: 10)
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)

    def run(self, images: np.ndarray, number: int | None = None) -> list[np.ndarray]:
        """The outputs for float images (N, 28, 28) in [0, 1] (an adder's: plus `number`), in batches; N >= 1."""
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(images), EVAL_BATCH):
            x = np.ascontiguousarray(images[start : start + EVAL_BATCH], dtype=np.float32)[:, None]
            feed: dict[str, Any] = {"image": x}
            if self.kind == "adder":
                feed["number"] = np.full(len(x), number if number is not None else 0, dtype=np.int64)
            parts.append([np.asarray(o, dtype=np.float32) for o in self._session.run(None, feed)])
        return [np.concatenate(column) for column in zip(*parts, strict=True)]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float32 (as torch.softmax on float32 logits)."""
    logits = logits.astype(np.float32, copy=False)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (torch.nn.functional.normalize)."""
    x = x.astype(np.float32, copy=False)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def prototypes(support: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean normalised embedding per class 0..n_classes-1 (protocols/fewshot.py's `prototypes`)."""
    support = normalize(support)
    sums = np.zeros((n_classes, support.shape[1]), dtype=np.float32)
    np.add.at(sums, labels, support)
    counts = np.maximum(np.bincount(labels, minlength=n_classes), 1)[:, None].astype(np.float32)
    return sums / counts  # type: ignore[no-any-return]


def distances(queries: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (Q, C) from normalised queries to prototypes (fewshot.py's `distances`)."""
    q = normalize(queries).astype(np.float64)
    p = protos.astype(np.float64)
    d2 = (q * q).sum(1)[:, None] + (p * p).sum(1)[None, :] - 2 * q @ p.T
    return np.maximum(d2, 0.0).astype(np.float32)  # type: ignore[no-any-return]


def confidences(d2: np.ndarray, scale: float) -> np.ndarray:
    """Softmax over classes of -scale x squared distance (fewshot.py's `confidences`)."""
    return softmax(-scale * d2)
