"""One function per command: compose registry, store, training, inference and data.

Every function returns a dataclass (reports.py) and never prints; progress goes out through
callbacks. The CLI (and any Python user) calls these; they raise `MnistError` subclasses for
anything the user can fix.
"""

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
from mnistcli.api.ensembling import members_of, stopped_ensemble, trains_members
from mnistcli.api.ensembling import resume as resume_ensemble
from mnistcli.api.ensembling import train as train_ensemble
from mnistcli.api.evaluation import evaluate
from mnistcli.api.exporting import export
from mnistcli.api.launching import LaunchFailed, launch, nproc
from mnistcli.api.launching import check as check_launch
from mnistcli.api.launching import check_resume as check_resume_launch
from mnistcli.api.plotting import PlotReport, plot, plot_bags, plot_predictions
from mnistcli.api.predicting import embed, oneshot, predict, save_embeddings
from mnistcli.api.reading import ReadDigit, Reading, ReadReport, read
from mnistcli.api.repeating import check_runs, repeat_names, repeat_seeds, summarize, train_runs
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
    RepeatReport,
    SumPrediction,
    TrainReport,
)

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
    "members_of",
    "model",
    "models",
    "nproc",
    "oneshot",
    "plot",
    "plot_bags",
    "plot_predictions",
    "predict",
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
