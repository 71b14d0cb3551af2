"""Everything the user sees: rich tables and bars for people, JSON lines and TSV for pipes.

console.py holds the two consoles (results on stdout, messages and progress on stderr) and the
formatting helpers; one module per family of command renders its results.
"""

from mnistcli.render.catalog import checkpoints_table, model_card, models_table, plot_report
from mnistcli.render.console import error, json_line, note, quiet, starting
from mnistcli.render.evaluation import (
    adder_json,
    adder_report,
    bags_json,
    bags_report,
    confusion_table,
    eval_json,
    eval_report,
    fewshot_json,
    fewshot_report,
)
from mnistcli.render.exporting import export_json, export_summary
from mnistcli.render.predicting import embeddings, oneshot_results, predictions, shown_inputs
from mnistcli.render.reading import readings
from mnistcli.render.settings import settings_view
from mnistcli.render.train import ensemble_summary, repeat_json, repeat_summary, train_json, train_summary

__all__ = [
    "adder_json",
    "adder_report",
    "bags_json",
    "bags_report",
    "checkpoints_table",
    "confusion_table",
    "embeddings",
    "ensemble_summary",
    "error",
    "eval_json",
    "eval_report",
    "export_json",
    "export_summary",
    "fewshot_json",
    "fewshot_report",
    "json_line",
    "model_card",
    "models_table",
    "note",
    "oneshot_results",
    "plot_report",
    "predictions",
    "quiet",
    "readings",
    "repeat_json",
    "repeat_summary",
    "settings_view",
    "shown_inputs",
    "starting",
    "train_json",
    "train_summary",
]
