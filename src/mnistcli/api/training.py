"""`mnist train` and `mnist train --resume`: set a run up, let the engine train it, test it, save it.

A run is described by what it was started with (model, arguments, options, data folder). `train`
takes that from the command line, `resume` from a stopped run's snapshot, and both build the run
the same way (`_setup`: seeding, data, splits, model, family), so a resumed run is the original
one with its snapshot loaded into it. The family's own `test` gives the result `mnist eval`
reports first; `store` writes the typed checkpoint description.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistcli import __version__, store
from mnistcli.api import calibrating, onnxcache
from mnistcli.api.common import check_testable, data_folder, load_checkpoint, load_tensors, params_count
from mnistcli.api.launching import NO_ENSEMBLES
from mnistcli.config import TrainConfig, split
from mnistcli.data import mnist
from mnistcli.data.tensors import TensorData
from mnistcli.engine import callbacks as cb
from mnistcli.engine import dist, optim
from mnistcli.engine import tensorboard as tb_events
from mnistcli.engine.device import resolve_precision, seed_everything
from mnistcli.engine.loop import EpochInfo, Loop, Position, StepInfo
from mnistcli.errors import CheckpointError, FileProblem, Interrupted, UsageError
from mnistcli.families import Data, Family, TestResult, get_family
from mnistcli.models.base import MEAN, STD
from mnistcli.registry import create_model, get_entry, recorded_args, saved_args
from mnistcli.reports import TrainReport
from mnistcli.store import lock, runlog, snapshot
from mnistcli.store.checkpoint import Checkpoint, DataSpec, ModelSpec, Results
from mnistcli.store.runlog import LOG, RunLog, read_log
from mnistcli.work import WorkFn, notify

PREPROCESSING = {
    "input": [1, 28, 28],
    "pixels": "float32 = uint8 / 255, white ink on black, MNIST-style (see data/images.py)",
    "normalize": {"mean": MEAN, "std": STD, "where": "inside the model"},
}


@dataclass
class Hooks:
    """Where a run reports: progress of steps and epochs, downloads, other work (all optional)."""

    on_step: Callable[[StepInfo], None] | None = None
    on_epoch: Callable[[EpochInfo], None] | None = None
    on_download: mnist.ProgressFn | None = None
    on_work: WorkFn | None = None


@dataclass
class Setup:
    """A run built and ready to train."""

    model_name: str
    model_args: dict[str, Any]
    config: TrainConfig
    family: Family
    model: torch.nn.Module
    device: torch.device
    generator: torch.Generator
    data: Data
    held: TensorData | None  # held-out images the temperature is fitted on
    held_from: str | None  # "validation" or "calibration"
    folder: Path  # the MNIST folder

    @property
    def options(self) -> dict[str, Any]:
        """Every training option, the shared ones and the family's, JSON-ready (meta.json's `config`)."""
        return {**self.config.to_dict(), **asdict(self.family.params)}


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
    root: Path | None = None,
) -> TrainReport | None:
    """Train `model_name` with its recipe overridden by the non-None `options`; save and return the run
    (in the store, or under `root`: an ensemble's members folder). Under torchrun, every process but rank 0
    trains its share, saves nothing and returns None (engine/dist.py).

    The run's folder is claimed when training starts; `log.jsonl` (and with `tensorboard`, event
    files) is written into it as it goes, and a resume snapshot at the end of every epoch. Ctrl-C
    raises `Interrupted` saying how to resume (`resume`). Work that is not a training step (target
    checks, the test after training) is reported to `on_work`.
    """
    t0 = time.perf_counter()
    if tensorboard:
        tb_events.require()
    entry = get_entry(model_name)
    family = get_family(entry.family)
    config, params = family.configure(entry.recipe, options or {})  # a bags model's epochs depend on --bags
    if family.trains_members:  # an ensemble: one run per member (api/ensembling.py)
        from mnistcli.api import ensembling

        if dist.launched():
            raise UsageError(NO_ENSEMBLES)

        hooks = Hooks(on_step, on_epoch, on_download, on_work)
        return ensembling.train(
            options or {}, model_args, name, data_dir, 1, None, lambda _: hooks, on_download, on_work, tensorboard
        )
    with dist.session(config.device) as here:  # one process, or one of several started by torchrun
        family.check_processes(here.world, config)
        if name is not None and here.is_main:
            store.check_new_name(name, root)  # before training, not after it
        hooks = Hooks(on_step, on_epoch, on_download, on_work)
        model_args, encoder = model_args_for(family, params, recorded_args(model_name, model_args or {}))
        setup = _setup(model_name, model_args, config, params, data_dir, hooks, here, encoder)
        run_dir = store.begin(model_name, name, root) if here.is_main else None  # claimed (store/lock.py)
        try:
            return _run(setup, run_dir, tensorboard, hooks, t0, here)
        finally:
            if run_dir is not None:
                lock.release(run_dir)


def model_args_for(family: type[Family], params: Any, model_args: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(the model's arguments, the self-supervised model to start from) for `--encoder RUN`, else (args, None).

    The instance network takes the encoder run's architecture (`family.encoder_args`); the run's
    name is recorded as resolved. Resuming never reloads it: the snapshot holds the weights."""
    ref = getattr(params, "encoder", None)
    if not ref or family.encoder_family is None:
        return model_args, None
    try:
        run, encoder, _ = load_checkpoint(ref, {family.encoder_family}, "cpu", suggest="simclr")
    except CheckpointError as e:
        raise UsageError(f"--encoder {ref}: {e}") from None
    wanted = family.encoder_args(saved_args(run.model, run.info.model.args))
    clash = sorted(k for k in wanted if k in model_args and model_args[k] != wanted[k])
    if clash:
        raise UsageError(f"--arg {', '.join(clash)}: set by --encoder {run.name} (its architecture), not to be changed")
    params.encoder = run.name
    return {**model_args, **wanted}, encoder


def resume(
    ref: str,
    device: str | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch: Callable[[EpochInfo], None] | None = None,
    on_download: mnist.ProgressFn | None = None,
    on_work: WorkFn | None = None,
) -> TrainReport | None:
    """Continue the stopped run `ref` (a run name or folder) from its last snapshot, to the result it would have
    had uninterrupted. `device` overrides the one it was started on. Raises `CheckpointError` if the run is
    in use, complete, gone, or has no snapshot (or an unreadable one), `FileProblem` if its log cannot be written.

    The run is claimed before anything in it is read (and released whatever happens), so that a
    `mnist checkpoints rm` meanwhile either is refused or has removed it: it is then not made again."""
    t0 = time.perf_counter()
    folder = store.stopped_run(ref)
    main = _main_process()  # the others of a data-parallel resume meet the claim rank 0 holds: they leave it be
    if main:
        lock.check_free(folder)  # a run in training has a snapshot too: say that it is in use
    if (folder / store.PLAN).is_file():  # a stopped ensemble: its members go on (api/ensembling.py), claimed there
        from mnistcli.api import ensembling

        hooks = Hooks(on_step, on_epoch, on_download, on_work)
        return ensembling.resume(folder, device, 1, lambda _: hooks, on_work)
    if main:
        lock.claim(folder)
    try:
        if main:
            _check_still_stopped(folder)
        state, run = snapshot.read(folder)  # the description checked: snapshot.described
        runlog.check(folder / LOG)  # a FIFO or a link in the log's place: refused before the run is set up
        entry = get_entry(run["model"])
        family = get_family(entry.family)
        options = {**run["options"], **({"device": device} if device else {})}
        config, params = split(family.Params, {}, options, family.name)
        if run["tensorboard"]:
            tb_events.require()
        hooks = Hooks(on_step, on_epoch, on_download, on_work)
        # On any number of processes: the snapshot holds everything the run shares (weights, optimizer, generators).
        with dist.session(config.device) as here:
            family.check_processes(here.world, config)
            args = saved_args(run["model"], run["args"])  # a run begun before its model gained an argument
            setup = _setup(run["model"], args, config, params, run["data"], hooks, here)
            if here.is_main:
                runlog.cut(folder / LOG, run["log_bytes"])  # what the stopped epoch logged runs again
            return _run(setup, folder if here.is_main else None, run["tensorboard"], hooks, t0, here, state)
    finally:
        if main:
            lock.release(folder)


def _restore(loop: Loop, state: dict[str, Any], folder: Path | None) -> None:
    """Put a snapshot's `state` back into `loop`. Raises `CheckpointError` if it does not fit the run (a snapshot
    edited or forged: a tensor missing or of another shape), naming the snapshot (its folder: `folder`)."""
    try:
        loop.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        where = folder / snapshot.SNAPSHOT if folder is not None else snapshot.SNAPSHOT
        first = f"no {e}" if isinstance(e, KeyError) else str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"{where}: the resume snapshot does not fit the run ({first[:200] or type(e).__name__})"
        ) from None


def _main_process() -> bool:
    """Whether this process is the one that claims and writes a run: the only one, or rank 0 of those torchrun
    started (engine/dist.py; read from the environment, as the claim comes before the processes meet)."""
    return not dist.launched() or os.environ.get("RANK", "0") == "0"


def _check_still_stopped(folder: Path) -> None:
    """Raise `CheckpointError` unless `folder` (claimed by this process) still holds a stopped run: it may have been
    removed, or completed, between finding it and claiming it."""
    if not folder.is_dir():
        raise CheckpointError(f"run {folder.name!r} is gone: it was removed before it could be resumed")
    if os.path.lexists(folder / store.META):
        raise CheckpointError(f"run {folder.name!r} is complete: there is nothing to resume")


def _setup(
    model_name: str,
    model_args: dict[str, Any],
    config: TrainConfig,
    params: Any,
    data_dir: str | None,
    hooks: Hooks,
    here: dist.Dist,
    encoder: torch.nn.Module | None = None,
) -> Setup:
    """Seed, build the model and the family, load and split the data: in this order, every time (and in every process
    of a data-parallel run, which therefore all start alike)."""
    device = here.device or torch.device("cpu")
    config.precision = resolve_precision(config.precision, device)  # recorded as it trains: bf16 or fp32
    if config.precision == "fp16" and device.type != "cuda":
        raise UsageError(f"--precision fp16 needs a CUDA device (this run is on {device.type}); bf16 works here")
    generator = seed_everything(config.seed)
    family_type = get_family(get_entry(model_name).family)
    family_type.check_args(model_args)  # before building: an argument refused must not cost memory first
    model = create_model(model_name, **model_args).to(device)  # bad --arg values fail before any data work
    if encoder is not None:
        family_type.adopt_encoder(model, encoder)
    family_type.check(params, config)
    family = family_type(params, config, generator)
    family.processes = here.world  # a batch is shared among them (its sampler keeps every share at 2 items or more)
    if not here.is_main:
        here.barrier()  # the main process finds (or downloads) the data first
    folder = data_folder(data_dir, hooks.on_download)
    if here.is_main:
        here.barrier()
    full_train, full_test = load_tensors("train", folder, device), load_tensors("test", folder, device)
    # Which images are selected and held out: drawn from the run's generator, or from `--split-seed`'s own
    # (the members of an ensemble hold out the same validation images, which their combination is fitted on).
    splitter = torch.Generator().manual_seed(config.split_seed) if config.split_seed is not None else generator
    train_data, val_data = training_split(full_train, config, splitter)
    if family_type.tested_on_its_digits:  # refused before any training: a run that could not be tested
        check_testable(config.classes, folder, full_test.labels.cpu().numpy())
    test_data = full_test.select(config.classes, None, generator)
    # A calibrated family's temperature is fitted on held-out training images: the validation split, else its own.
    train_data, held, held_from = calibrating.hold_out(family, train_data, val_data, splitter)
    if len(train_data) < 2:
        raise UsageError("fewer than 2 training images left after --classes/--per-class/--val-split")
    data = Data(train_data, val_data, test_data, full_train, full_test)
    family.prepare(data)
    return Setup(model_name, model_args, config, family, model, device, generator, data, held, held_from, folder)


def training_split(
    full_train: TensorData, config: TrainConfig, generator: torch.Generator
) -> tuple[TensorData, TensorData | None]:
    """(the training images a run keeps, its validation split or None): `--classes`, `--per-class` and `--val-split`
    applied to every training image, in this order, drawing from `generator`."""
    train = full_train.select(config.classes, config.per_class, generator)
    return train.split(config.val_split or 0.0, generator)


def _loop(s: Setup, callbacks: list[cb.Callback], here: dist.Dist) -> Loop:
    """The engine's loop for the set-up run: its optimizer, schedule, sampler and generators, with `callbacks`."""
    config, family = s.config, s.family
    optimizer = optim.for_config(s.model, config)
    sampler = family.sampler(config.batch_size)
    steps = -(-len(sampler) // config.accumulate) * config.epochs
    return Loop(
        s.model,
        family,
        optimizer,
        sampler,
        {"run": s.generator, **family.generators()},
        config.epochs,
        optim.schedule_for(optimizer, config, steps),
        callbacks,
        validate=_validator(family, s.data.val),
        accumulate=config.accumulate,
        precision=config.precision,
        dist=here,
    )


def _run(
    s: Setup,
    run_dir: Path | None,
    tensorboard: bool,
    hooks: Hooks,
    t0: float,
    here: dist.Dist,
    state: dict[str, Any] | None = None,
) -> TrainReport | None:
    """Train the set-up run in `run_dir` (from `state`, when resuming), then test, calibrate and save it; returns its
    report. The other processes of a data-parallel run (no `run_dir`) train their share, write nothing and return
    None."""
    config = s.config
    if run_dir is None:
        loop = _loop(s, [], here)
        if state is not None:
            _restore(loop, state, None)
        here.seed_own_draws(config.seed, loop.position.epoch)
        loop.run()
        return None
    config, family, data = s.config, s.family, s.data
    # The target is watched on the validation split when there is one, else on the test set
    # (as time-to-accuracy benchmarks do); the report says which.
    monitor = data.val if data.val is not None else data.test
    with contextlib.ExitStack() as cleanup:
        log = RunLog(run_dir / LOG)
        cleanup.callback(log.close)
        board = tb_events.TensorBoardLog(run_dir / tb_events.FOLDER) if tensorboard else None
        if board is not None:
            cleanup.callback(board.close)  # whatever happens after this, the events reach the disk
        best = cb.BestEpoch(config.early_stopping)
        watch = (
            cb.TargetWatch(
                family.validate,
                monitor,
                config.target_accuracy,
                config.check_every,
                hooks.on_work,
                family.per_image_validation,
            )
            if config.target_accuracy
            else None
        )

        # The epoch and the attempt of the last snapshot written (a resumed run starts from one).
        saved = [int(state["position"]["epoch"]) if state is not None else -1, 1]

        def save_snapshot(loop: Loop) -> None:
            logged = log.flush()
            started = {"model": s.model_name, "args": s.model_args, "options": s.options, "data": str(s.folder)}
            snapshot.write(run_dir, loop.state_dict(), {**started, "tensorboard": tensorboard, "log_bytes": logged})
            saved[0] = loop.position.epoch
            saved[1] = attempts.current if attempts is not None else 1

        rule = family.restart_rule()
        restart = (
            cb.Restart(*rule, family.fresh_start, partial(_restarted, log, board, config, rule[3], hooks))
            if rule
            else None
        )
        several, keep_all = family.attempt_rule(), family.keeps_every_attempt()
        attempts = None
        if several:
            count, measure, more, fit = several
            told = partial(_attempted, log, board, count, measure, more, fit, keep_all, hooks)
            attempts = cb.BestAttempt(count, measure, family.fresh_start, told, keep_all, more=more, fit=fit)

        callbacks: list[cb.Callback] = [
            *([best] if data.val is not None else []),
            *([watch] if watch is not None else []),
            cb.Report(log.step, log.epoch),
            *([cb.Report(board.step, board.epoch)] if board is not None else []),
            cb.Report(hooks.on_step, hooks.on_epoch),
            # A restart comes after the reports (the abandoned epoch is shown, then dropped), before the snapshot.
            *([restart] if restart is not None else []),
            *([attempts] if attempts is not None else []),
            cb.Snapshot(save_snapshot),
        ]
        loop = _loop(s, callbacks, here)
        family.on_work = hooks.on_work
        if state is not None:
            _restore(loop, state, run_dir)
            saved[1] = attempts.current if attempts is not None else 1
            if board is not None and attempts is not None and attempts.current > 1:
                board.attempt(attempts.current)  # a run resumed in its second attempt or later
        here.seed_own_draws(config.seed, loop.position.epoch)
        try:
            if state is None:
                pretrained = family.pretrain(s.model)
                if pretrained is not None:
                    log.write("pretrain", pretrained)
            position = loop.run()
            if attempts is not None:  # the log and TensorBoard show the attempt kept (with --keep mean: its curve)
                log.write("kept", {"attempt": attempts.kept, "losses": attempts.finished, "all": keep_all})
                if board is not None:
                    board.attempt(attempts.kept or 1)
            # With --keep mean: the attempts that fitted (none diverged), or the one kept if none did.
            members = attempts.members() if attempts is not None and keep_all else []
            combined = len(members) > 1
            if combined:  # the attempts averaged: the model measured and saved
                model, args = family.combine_attempts(s.model_name, s.model_args, [w for _, w in members])
                s = replace(s, model=model.to(s.device), model_args=args)
                if board is not None:
                    board.combined()  # the test results are the combination's, not one attempt's
            log.close()  # training is over; nothing more goes into the log
            target = _target(config, watch, data)
            test = _test(family, s.model, data, watch if here.world == 1 else None, hooks.on_work)
            calibration = calibrating.fit(s.model, family, s.held, s.held_from)
            restarts = restart.restarts if restart is not None else []
            tries = (
                {
                    "losses": attempts.finished,
                    "kept": attempts.kept,
                    **({"extra": attempts.extra} if attempts.extra else {}),
                    **({"combined": "mean"} if combined else {}),
                    **({"members": [n for n, _ in members]} if keep_all else {}),
                }
                if attempts is not None
                else None
            )
            checkpoint = _checkpoint(s, position, test, target, best.best_epoch, calibration, restarts, tries, here)
            run = store.save(s.model, checkpoint, run_dir)
            onnxcache.write(run, s.model)  # the fast path's model (api/serving.py), when onnxruntime is there
        except KeyboardInterrupt:
            log.close()
            if saved[0] < 0:  # no snapshot yet: nothing to resume, so nothing is kept
                shutil.rmtree(run_dir, ignore_errors=True)
                raise Interrupted("interrupted before training started") from None
            where = (
                ""
                if attempts is None
                else f" in attempt {saved[1]} of {attempts.planned}"
                if saved[1] <= attempts.planned
                else f" in attempt {saved[1]} (one added because none of the first {attempts.planned} fitted)"
            )
            raise Interrupted(
                f"interrupted{where} with {saved[0]} of {config.epochs} epochs done and saved: "
                f"resume with `mnist train --resume {run_dir.name}`"
            ) from None
        except FileProblem as e:  # a full disk: what the last snapshot holds is not lost
            if saved[0] < 0:
                log.close()
                shutil.rmtree(run_dir, ignore_errors=True)
                raise
            raise FileProblem(
                e.path,
                f"{e.problem}; {saved[0]} of {config.epochs} epochs are done and saved: resume with "
                f"`mnist train --resume {run_dir.name}` once it can be written",
            ) from None
        except BaseException:
            if state is None and saved[0] <= 0 and log.empty:  # failed before logging anything
                log.close()
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        snapshot.remove(run_dir)
        steps_logged = read_log(run_dir / LOG)[0]
        if board is not None:
            last_step = steps_logged[-1]["step"] if steps_logged else 0
            board.finish({"accuracy": test.accuracy, **test.extra}, data.test.images[:32], last_step)
        return TrainReport(
            run=run,
            options=s.options,
            test_accuracy=test.accuracy,
            test_loss=test.loss,
            seconds=position.seconds,
            total_seconds=time.perf_counter() - t0,
            history=position.history,
            stopped_early=position.stopped_early,
            device=str(s.device),
            target=target,
            test_measure=test.measure,
            test_extra=test.extra,
            loss_curve=[
                float("nan") if e.get("recent_loss") is None else float(e["recent_loss"]) for e in steps_logged
            ],
            log_path=str(run_dir / LOG),
            tensorboard_path=str(run_dir / tb_events.FOLDER) if tensorboard else None,
            calibration=calibration,
            train_label=family.train_label,
            val_label=family.val_label,
            test_label=family.test_label,
            test_unit=family.test_unit,
            resumed_from=int(state["position"]["epoch"]) if state is not None else None,
            restarts=restarts,
            attempts=tries,
        )


def _checkpoint(
    s: Setup,
    position: Position,
    test: TestResult,
    target: dict[str, Any] | None,
    best_epoch: int | None,
    calibration: dict[str, Any] | None,
    restarts: list[dict[str, float]],
    attempts: dict[str, Any] | None,
    here: dist.Dist,
) -> Checkpoint:
    """The description `meta.json` holds of a trained run (store/checkpoint.py)."""
    data, calibrated_on = s.data, s.held_from == "calibration" and s.held is not None
    return Checkpoint(
        model=ModelSpec(s.model_name, s.model_args, s.family.name, params_count(s.model)),
        config=s.options,
        data=DataSpec(
            folder=str(s.folder),
            train_images=len(data.train),
            val_images=len(data.val or []),
            calibration_images=len(s.held or []) if calibrated_on else 0,
            test_images=len(data.test),
            unlabelled_images=len(getattr(s.family, "unlabelled", None) or []),
            classes=tuple(s.config.classes or range(10)),
        ),
        history=position.history,
        results=Results(test.accuracy, test.loss, test.measure, test.extra, best_epoch, position.stopped_early, target),
        family_entries={
            **({"calibration": calibration} if calibration is not None else {}),
            **({"restarts": restarts} if restarts else {}),
            **({"attempts": attempts} if attempts is not None else {}),
            **test.meta,
        },
        preprocessing=PREPROCESSING,
        seconds=position.seconds,
        device=str(s.device),
        processes=here.world,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=versions(),
    )


def versions() -> dict[str, str]:
    """The versions a checkpoint records: mnistcli's, torch's, numpy's and Python's."""
    return {
        "mnistcli": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _restarted(
    log: RunLog,
    board: tb_events.TensorBoardLog | None,
    config: TrainConfig,
    measure: str,
    hooks: Hooks,
    restarts: list[dict[str, float]],
) -> None:
    """A run started over (engine.callbacks.Restart): the log and TensorBoard keep only the new attempt; the user
    hears why."""
    log.start_over(restarts)
    if board is not None:
        board.start_over()
    last = restarts[-1]
    notify(
        hooks.on_work,
        f"{measure.replace('_', ' ')} {last['train_loss']:.3f} after {last['epoch']} of {config.epochs} epochs: "
        "not taking off; "
        f"starting over with fresh weights (restart {len(restarts)})",
    )


def _attempted(
    log: RunLog,
    board: tb_events.TensorBoardLog | None,
    planned: int,
    measure: str,
    more: int,
    fit: float,
    keep_all: bool,
    hooks: Hooks,
    finished: list[float],
    extra: int,
) -> None:
    """An attempt ended and the next began (engine.callbacks.BestAttempt): the log marks where the new one starts and
    TensorBoard shows it as a run of its own (store/runlog.py `read_log` gives the attempt kept); the user hears how
    the last one ended, and why another follows when it is the `extra`-th beyond those planned (none had fitted)."""
    log.write("attempt", {"attempt": len(finished) + 1, "losses": finished, **({"extra": extra} if extra else {})})
    if board is not None:
        board.attempt(len(finished) + 1)
    what = measure.replace("_", " ")
    if extra:
        told = (
            f"attempt {len(finished)} ended at a {what} of {finished[-1]:.3f}; none of the {len(finished)} ended "
            f"below {fit:g}, so none has fitted: attempt {len(finished) + 1} starts with fresh weights "
            f"(extra attempt {extra} of at most {more})"
        )
    else:
        told = (
            f"attempt {len(finished)} of {planned} ended at a {what} of {finished[-1]:.3f}; attempt "
            f"{len(finished) + 1} starts with fresh weights "
            + (
                "(those that fit their bags are kept, their answers averaged)"
                if keep_all
                else "(the one that fits best is kept)"
            )
        )
    notify(hooks.on_work, told)


def _validator(family: Family, val: TensorData | None) -> Callable[[torch.nn.Module], dict[str, float]] | None:
    """The loop's end-of-epoch validation: the family's measure on the validation split, if there is one."""
    if val is None:
        return None
    return lambda model: family.validate(model, val)


def _target(config: TrainConfig, watch: cb.TargetWatch | None, data: Data) -> dict[str, Any] | None:
    """The `target` entry of the results: the target, where it was checked, whether and when it was reached."""
    if config.target_accuracy is None or watch is None:
        return None
    return {
        "target": config.target_accuracy,
        "checked_on": "validation" if data.val is not None else "test",
        "reached": watch.reached is not None,
        **(watch.reached or {}),
    }


def _test(
    family: Family, model: torch.nn.Module, data: Data, watch: cb.TargetWatch | None, on_work: WorkFn | None
) -> TestResult:
    """The family's test; where the last target check was a full pass over the test set with these very weights
    and the family's validation measure is its test measure, that check is the test."""
    if (
        watch is not None
        and watch.reached is not None
        and data.val is None
        and getattr(family, "validate_is_test", False)
    ):
        return TestResult(watch.reached["accuracy"], watch.reached["loss"], "accuracy")
    return family.test(model, data, on_work)
