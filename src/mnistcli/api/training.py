"""`mnist train`: build the model and its task, fit it, measure it on the test set, save the run."""

from __future__ import annotations

import contextlib
import platform
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from mnistcli import __version__, store
from mnistcli.api import calibrating
from mnistcli.api.common import data_folder, load_tensors, params
from mnistcli.api.reports import TrainReport
from mnistcli.config import TrainConfig
from mnistcli.data import mnist
from mnistcli.engine import tensorboard as tb_events
from mnistcli.engine.device import choose_device, seed_everything
from mnistcli.engine.loop import EpochInfo, StepInfo, fit
from mnistcli.errors import UsageError
from mnistcli.families import get_task
from mnistcli.models.base import MEAN, STD
from mnistcli.protocols import fewshot
from mnistcli.protocols.inference import embed_data, evaluate_classifier
from mnistcli.protocols.linear_probe import frozen, linear_evaluation
from mnistcli.registry import create_model, get_entry
from mnistcli.store.runlog import LOG, RunLog
from mnistcli.work import Counter, WorkFn, phase

PREPROCESSING = {
    "input": [1, 28, 28],
    "pixels": "float32 = uint8 / 255, white ink on black, MNIST-style (see data/images.py)",
    "normalize": {"mean": MEAN, "std": STD, "where": "inside the model"},
}


def _check(task: str, config: TrainConfig) -> None:
    """Refuse option combinations a task cannot honour, before any data work."""
    if task == "contrastive" and config.target_accuracy is not None:
        raise UsageError("--target-accuracy is for classifiers; a contrastive model has no accuracy while it trains")
    if task in ("contrastive", "metric") and config.batch_size < 2:
        raise UsageError(f"--batch-size must be at least 2 for a {task} model (the other images are its negatives)")
    if task == "metric" and config.classes is not None and len(config.classes) < 2:
        raise UsageError("a metric model needs at least 2 classes in --classes (another class gives the negatives)")
    classes = len(config.classes or range(10))
    if task == "metric" and config.batch_size < 2 * classes:
        raise UsageError(
            f"--batch-size must be at least {2 * classes} for a metric model on {classes} classes"
            " (a batch holds at least 2 images of each)"
        )


def train(
    model_name: str,
    options: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
    name: str | None = None,
    data_dir: str | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch: Callable[[EpochInfo], None] | None = None,
    on_download: mnist.ProgressFn | None = None,
    tensorboard: bool = False,
    on_work: WorkFn | None = None,
) -> TrainReport:
    """Train `model_name` with its recipe overridden by the non-None `options`; save and return the run.

    The run's folder is claimed when training starts and `log.jsonl` is written into it as it
    goes (with `tensorboard`, event files too); the checkpoint completes it at the end. Work that
    is not a training step (target checks, the test after training) is reported to `on_work`.
    """
    t0 = time.perf_counter()
    if tensorboard:
        tb_events.require()
    entry = get_entry(model_name)
    config = TrainConfig.build(entry.recipe, options or {})
    if name is not None:
        store.check_new_name(name)  # before training, not after it
    device = choose_device(config.device)
    generator = seed_everything(config.seed)
    model = create_model(model_name, **(model_args or {})).to(device)  # bad --arg values fail before any data work
    _check(entry.task, config)
    folder = data_folder(data_dir, on_download)
    full_train, full_test = load_tensors("train", folder, device), load_tensors("test", folder, device)
    train_data = full_train.select(config.classes, config.per_class, generator)
    test_data = full_test.select(config.classes, None, generator)
    train_data, val_data = train_data.split(config.val_split or 0.0, generator)
    # A classifier's temperature is fitted on held-out training images: the validation split, else its own.
    train_data, held, held_from = calibrating.hold_out(entry.task, config, train_data, val_data, generator)
    if len(train_data) < 2:
        raise UsageError("fewer than 2 training images left after --classes/--per-class/--val-split")
    if entry.task == "metric":
        fewshot.check_episodes(full_test.labels, max(fewshot.SHOTS))  # before training, not after it

    # A metric model may self-supervise on every training image; their labels are never read.
    unlabelled = full_train if entry.task == "metric" and config.ssl_weight > 0 else None
    task = get_task(entry.task, config, generator, unlabelled=unlabelled)
    # The target is watched on the validation split when there is one, else on the test set
    # (as time-to-accuracy benchmarks do); the report says which.
    monitor = val_data if val_data is not None else test_data
    run_dir = store.begin(model_name, name)
    with contextlib.ExitStack() as cleanup:
        log = RunLog(run_dir / LOG)
        cleanup.callback(log.close)
        board = tb_events.TensorBoardLog(run_dir / tb_events.FOLDER) if tensorboard else None
        if board is not None:
            cleanup.callback(board.close)  # whatever happens after this, the events reach the disk
        logged: list[StepInfo] = []

        def step(info: StepInfo) -> None:
            log.step(info)
            logged.append(info)
            if board is not None:
                board.step(info)
            if on_step is not None:
                on_step(info)

        def epoch(info: EpochInfo) -> None:
            log.epoch(info)
            if board is not None:
                board.epoch(info)
            if on_epoch is not None:
                on_epoch(info)

        try:
            result = fit(
                model,
                task,
                train_data,
                config,
                generator,
                val=val_data,
                monitor=monitor,
                on_step=step,
                on_epoch=epoch,
                on_work=on_work,
            )
        except BaseException:
            if not logged:  # failed before logging anything: leave no folder behind to block the name
                log.close()
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        log.close()  # training is over; nothing more goes into the log
        target = None
        if config.target_accuracy is not None:
            target = {
                "target": config.target_accuracy,
                "checked_on": "validation" if val_data is not None else "test",
                "reached": result.target_reached is not None,
                **(result.target_reached or {}),
            }
        extra_meta: dict[str, Any] = {}
        extra_test: dict[str, float] = {}
        test_loss: float | None
        if entry.task == "contrastive":
            # Self-supervised: the test result is the linear evaluation `mnist eval` gives (all labels
            # of the whole training split, all ten digits), so the two always agree.
            probe = linear_evaluation(frozen(model), full_train, full_test, on_work=on_work)
            test_accuracy, test_loss, measure = probe.accuracy, probe.loss, "linear evaluation"
        elif entry.task == "metric":
            # The headline of `mnist eval`: 10-way 1-shot episodes over all ten test digits.
            queries = fewshot.default_queries(full_test.labels, max(fewshot.SHOTS))  # as `mnist eval` draws them
            with phase(on_work, "test: 10-way 1-shot episodes"):
                score = fewshot.run_episodes(
                    embed_data(model, full_test), full_test.labels, list(range(10)), 10, 1, queries=queries
                )
            test_accuracy, test_loss, measure = score.accuracy, None, "10-way 1-shot"
            # The scale that turns distances into confidences for `mnist oneshot`, fitted on labelled
            # training images (held-out ones when there is a validation split). Only with the labels
            # of all ten digits: fitted on the few classes a model trained on, it is far too sharp for
            # new ones (0,1,2 model: 97% mean confidence at 80% accuracy on 10-way test episodes).
            held = val_data if val_data is not None else train_data
            every_digit = len(config.classes or range(10)) == 10
            scale = None
            if every_digit:
                embedding = Counter(on_work, "calibrating one-shot confidences", len(held))
                scale = fewshot.calibrate(embed_data(model, held, on_images=embedding.add), held.labels)
                embedding.finish()
            if scale is not None:
                extra_meta["oneshot"] = {
                    "scale": scale,
                    "calibrated_on": "validation" if val_data is not None else "train",
                }
        elif entry.task == "adder":
            # Each test image paired with a fixed number drawn from the seed, as `mnist eval` does.
            with phase(on_work, "testing"):
                metrics = task.evaluate(model, test_data)
            test_accuracy, test_loss, measure = metrics["accuracy"], metrics["loss"], "sum accuracy"
            extra_test["digit_accuracy"] = metrics["digit_accuracy"]
        elif result.target_reached is not None and val_data is None:
            # The last target check was a full pass over the test set with these very weights.
            test_accuracy, test_loss = result.target_reached["accuracy"], result.target_reached["loss"]
            measure = "accuracy"
        else:
            with phase(on_work, "testing"):
                test = evaluate_classifier(model, test_data)
            test_accuracy, test_loss, measure = test.accuracy, test.loss, "accuracy"

        calibration = calibrating.fit(model, entry.task, config, held, held_from)
        if calibration is not None:
            extra_meta["calibration"] = calibration
        meta = {
            "model": {"name": model_name, "args": model_args or {}, "task": entry.task, "params": params(model)},
            "preprocessing": PREPROCESSING,
            "config": config.to_dict(),
            "data": {
                "folder": str(folder),
                "train_images": len(train_data),
                "val_images": len(val_data or []),
                "calibration_images": len(held) if held_from == "calibration" and held is not None else 0,
                "test_images": len(test_data),
                "unlabelled_images": len(unlabelled) if unlabelled is not None else 0,
                "classes": list(config.classes or range(10)),
            },
            "history": result.history,
            "metrics": {
                "test_accuracy": test_accuracy,
                "test_loss": test_loss,
                "test_measure": measure,
                **extra_test,
                "best_epoch": result.best_epoch,
                "stopped_early": result.stopped_early,
                "target": target,
            },
            **extra_meta,
            "seconds": result.seconds,
            "device": str(device),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {
                "mnistcli": __version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
        }
        run = store.save(model, meta, folder=run_dir)
        if board is not None:
            board.finish(
                {"accuracy": test_accuracy, **extra_test}, test_data.images[:32], logged[-1].step if logged else 0
            )
        return TrainReport(
            run,
            config,
            test_accuracy,
            test_loss,
            result.seconds,
            time.perf_counter() - t0,
            result.history,
            result.stopped_early,
            str(device),
            target,
            measure,
            extra_test,
            [info.recent_loss for info in logged],
            str(run_dir / LOG),
            str(run_dir / tb_events.FOLDER) if tensorboard else None,
            calibration,
        )
