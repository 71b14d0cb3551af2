"""One function per command: compose registry, store, training, inference and data.

Every function returns a dataclass (reports.py) and never prints; progress goes out through
callbacks. The CLI (and any Python user) calls these; they raise `MnistError` subclasses for
anything the user can fix.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnistcli.api.catalog import (
        broken_runs,
        checkpoints,
        in_use,
        interrupted_runs,
        model,
        models,
        remove_checkpoint,
        resumable,
    )
    from mnistcli.api.common import prefetch_mnist
    from mnistcli.api.embeddings import save_embeddings
    from mnistcli.api.ensembling import members_of, stopped_ensemble, trains_members
    from mnistcli.api.ensembling import resume as resume_ensemble
    from mnistcli.api.ensembling import train as train_ensemble
    from mnistcli.api.evaluation import evaluate
    from mnistcli.api.exporting import export
    from mnistcli.api.launching import LaunchFailed, launch, nproc
    from mnistcli.api.launching import check as check_launch
    from mnistcli.api.launching import check_resume as check_resume_launch
    from mnistcli.api.plotting import PlotReport, plot, plot_bags, plot_predictions
    from mnistcli.api.repeating import check_runs, repeat_names, repeat_seeds, summarize, train_runs
    from mnistcli.api.serving import check_add, embed, oneshot, predict, read
    from mnistcli.api.training import resume, train
    from mnistcli.reports import (
        AdderReport,
        BagPrediction,
        BagsReport,
        EmbedReport,
        EvalReport,
        ExportReport,
        Failure,
        FewShotReport,
        FewShotScore,
        Match,
        ModelInfo,
        OneShotReport,
        Prediction,
        PredictReport,
        ReadDigit,
        Reading,
        ReadReport,
        RepeatReport,
        SumPrediction,
        TrainReport,
    )

_WHERE = {  # name: (module, name there); imported when first used, so that `mnist predict` on the fast
    # path (api/serving.py) and `mnist --help` never import torch
    "AdderReport": ("mnistcli.reports", "AdderReport"),
    "BagPrediction": ("mnistcli.reports", "BagPrediction"),
    "BagsReport": ("mnistcli.reports", "BagsReport"),
    "EmbedReport": ("mnistcli.reports", "EmbedReport"),
    "EvalReport": ("mnistcli.reports", "EvalReport"),
    "ExportReport": ("mnistcli.reports", "ExportReport"),
    "Failure": ("mnistcli.reports", "Failure"),
    "FewShotReport": ("mnistcli.reports", "FewShotReport"),
    "FewShotScore": ("mnistcli.reports", "FewShotScore"),
    "LaunchFailed": ("mnistcli.api.launching", "LaunchFailed"),
    "Match": ("mnistcli.reports", "Match"),
    "ModelInfo": ("mnistcli.reports", "ModelInfo"),
    "OneShotReport": ("mnistcli.reports", "OneShotReport"),
    "PlotReport": ("mnistcli.api.plotting", "PlotReport"),
    "PredictReport": ("mnistcli.reports", "PredictReport"),
    "Prediction": ("mnistcli.reports", "Prediction"),
    "ReadDigit": ("mnistcli.reports", "ReadDigit"),
    "ReadReport": ("mnistcli.reports", "ReadReport"),
    "Reading": ("mnistcli.reports", "Reading"),
    "RepeatReport": ("mnistcli.reports", "RepeatReport"),
    "SumPrediction": ("mnistcli.reports", "SumPrediction"),
    "TrainReport": ("mnistcli.reports", "TrainReport"),
    "broken_runs": ("mnistcli.api.catalog", "broken_runs"),
    "check_add": ("mnistcli.api.serving", "check_add"),
    "check_launch": ("mnistcli.api.launching", "check"),
    "check_resume_launch": ("mnistcli.api.launching", "check_resume"),
    "check_runs": ("mnistcli.api.repeating", "check_runs"),
    "checkpoints": ("mnistcli.api.catalog", "checkpoints"),
    "embed": ("mnistcli.api.serving", "embed"),
    "evaluate": ("mnistcli.api.evaluation", "evaluate"),
    "export": ("mnistcli.api.exporting", "export"),
    "in_use": ("mnistcli.api.catalog", "in_use"),
    "interrupted_runs": ("mnistcli.api.catalog", "interrupted_runs"),
    "launch": ("mnistcli.api.launching", "launch"),
    "members_of": ("mnistcli.api.ensembling", "members_of"),
    "model": ("mnistcli.api.catalog", "model"),
    "models": ("mnistcli.api.catalog", "models"),
    "nproc": ("mnistcli.api.launching", "nproc"),
    "oneshot": ("mnistcli.api.serving", "oneshot"),
    "plot": ("mnistcli.api.plotting", "plot"),
    "plot_bags": ("mnistcli.api.plotting", "plot_bags"),
    "plot_predictions": ("mnistcli.api.plotting", "plot_predictions"),
    "predict": ("mnistcli.api.serving", "predict"),
    "prefetch_mnist": ("mnistcli.api.common", "prefetch_mnist"),
    "read": ("mnistcli.api.serving", "read"),
    "remove_checkpoint": ("mnistcli.api.catalog", "remove_checkpoint"),
    "repeat_names": ("mnistcli.api.repeating", "repeat_names"),
    "repeat_seeds": ("mnistcli.api.repeating", "repeat_seeds"),
    "resumable": ("mnistcli.api.catalog", "resumable"),
    "resume": ("mnistcli.api.training", "resume"),
    "resume_ensemble": ("mnistcli.api.ensembling", "resume"),
    "save_embeddings": ("mnistcli.api.embeddings", "save_embeddings"),
    "stopped_ensemble": ("mnistcli.api.ensembling", "stopped_ensemble"),
    "summarize": ("mnistcli.api.repeating", "summarize"),
    "train": ("mnistcli.api.training", "train"),
    "train_ensemble": ("mnistcli.api.ensembling", "train"),
    "train_runs": ("mnistcli.api.repeating", "train_runs"),
    "trains_members": ("mnistcli.api.ensembling", "trains_members"),
}


def load(*names: str) -> None:
    """Import the modules behind the api functions `names` now rather than at their first use: most import torch
    (1-5 s), which a command does under its start-up spinner (render.starting). Raises KeyError for a name not in
    the api."""
    for name in names:
        importlib.import_module(_WHERE[name][0])


def __getattr__(name: str) -> Any:
    """The api function or report `name`, its module imported on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _WHERE[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


__all__ = [
    "AdderReport",
    "BagPrediction",
    "BagsReport",
    "EmbedReport",
    "EvalReport",
    "ExportReport",
    "Failure",
    "FewShotReport",
    "FewShotScore",
    "LaunchFailed",
    "Match",
    "ModelInfo",
    "OneShotReport",
    "PlotReport",
    "PredictReport",
    "Prediction",
    "ReadDigit",
    "ReadReport",
    "Reading",
    "RepeatReport",
    "SumPrediction",
    "TrainReport",
    "broken_runs",
    "check_add",
    "check_launch",
    "check_resume_launch",
    "check_runs",
    "checkpoints",
    "embed",
    "evaluate",
    "export",
    "in_use",
    "interrupted_runs",
    "launch",
    "load",
    "members_of",
    "model",
    "models",
    "nproc",
    "oneshot",
    "plot",
    "plot_bags",
    "plot_predictions",
    "predict",
    "prefetch_mnist",
    "read",
    "remove_checkpoint",
    "repeat_names",
    "repeat_seeds",
    "resumable",
    "resume",
    "resume_ensemble",
    "save_embeddings",
    "stopped_ensemble",
    "summarize",
    "train",
    "train_ensemble",
    "train_runs",
    "trains_members",
]
