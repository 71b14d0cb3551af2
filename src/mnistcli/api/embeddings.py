"""`mnist embed --output FILE`: the vectors as .npy or CSV (no torch: the fast path writes them too)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from mnistcli.atomic import write_output
from mnistcli.errors import UsageError
from mnistcli.reports import EmbedReport


def save_embeddings(report: EmbedReport, output: str | Path, fmt: str | None = None) -> Path:
    """Write the vectors as .npy (float32, rows in input order) or CSV (path, then the values): atomically to a file,
    directly to `-` (standard output), a device or a FIFO (atomic.write_output).

    `fmt` defaults to the file's extension (.csv -> csv, anything else -> npy).
    """
    fmt = fmt or ("csv" if Path(output).suffix.lower() == ".csv" else "npy")
    if fmt == "npy":
        return write_output(output, lambda f: np.save(f, report.vectors.astype(np.float32)))
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["path", *(f"e{i}" for i in range(report.vectors.shape[1]))])
        writer.writerows([p, *(f"{v:.6g}" for v in row)] for p, row in zip(report.paths, report.vectors, strict=True))
        # surrogateescape: a file name that is not valid UTF-8 is written back as the same bytes
        return write_output(output, lambda f: f.write(text.getvalue().encode("utf-8", "surrogateescape")))
    raise UsageError(f"unknown format {fmt!r} (choose npy or csv)")
