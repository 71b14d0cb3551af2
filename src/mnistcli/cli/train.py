"""`mnist train`: options -> a config -> `api.train` -> the summary."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Optional

import typer

from mnistcli import render
from mnistcli.cli import complete, helptext
from mnistcli.cli.common import (
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    app,
    check_alone,
    given,
    guarded,
    parse_classes,
    parse_model_args,
    parse_runs,
)
from mnistcli.cli.helptext import DATA, ENSEMBLE, FAMILY, OPTIMISATION, RUN, STOPPING, choice, either
from mnistcli.cli.settings import remember_data_dir
from mnistcli.config import Device, Mining, Optimizer, Precision, Scheduler, TrainConfig
from mnistcli.errors import UsageError
from mnistcli.registry import declared_models
from mnistcli.render import progress

RECIPE = "recipe"  # shown as [default: (recipe)]: the model's own value (`mnist models --json` lists them)


def _recipes_default(field: str) -> str:
    """'0.25; cnn-fast 0.08': a field's default and the recipes that change it, read without importing torch."""
    default = getattr(TrainConfig, field)
    own = {name: r[field] for name, r in declared_models().items() if field in r}
    return "; ".join(
        [
            f"{default:g}" if isinstance(default, float) else str(default),
            *(f"{name} {v:g}" if isinstance(v, float) else f"{name} {v}" for name, v in own.items()),
        ]
    )


@app.command()
@guarded
def train(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Argument(
            help="Model to train (see `mnist models`).", metavar="MODEL", autocompletion=complete.model_names
        ),
    ] = "cnn",
    epochs: Annotated[
        Optional[int],
        typer.Option(help="Passes over the training set.", show_default=RECIPE, rich_help_panel=OPTIMISATION),
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            help="Images per step (triplet models: labelled images per class-balanced batch).",
            show_default=RECIPE,
            rich_help_panel=OPTIMISATION,
        ),
    ] = None,
    lr: Annotated[
        Optional[float],
        typer.Option(help="Learning rate (peak rate for onecycle).", show_default=RECIPE, rich_help_panel=OPTIMISATION),
    ] = None,
    optimizer: Annotated[
        Optional[Optimizer],
        typer.Option(
            help=f"{either(Optimizer)}.",
            metavar="NAME",
            parser=choice(Optimizer),
            show_default=RECIPE,
            rich_help_panel=OPTIMISATION,
        ),
    ] = None,
    momentum: Annotated[
        Optional[float],
        typer.Option(
            help="Momentum of sgd, nesterov and muon (also the first beta of muon's AdamW part; onecycle cycles it"
            " between 0.85 and 0.95).",
            show_default="0.9",
            rich_help_panel=OPTIMISATION,
        ),
    ] = None,
    weight_decay: Annotated[
        Optional[float],
        typer.Option(
            help="Weight decay (decoupled for adamw and muon).", show_default=RECIPE, rich_help_panel=OPTIMISATION
        ),
    ] = None,
    scheduler: Annotated[
        Optional[Scheduler],
        typer.Option(
            help=f"Learning-rate schedule, stepped per batch: {either(Scheduler)}.",
            metavar="NAME",
            parser=choice(Scheduler),
            show_default=RECIPE,
            rich_help_panel=OPTIMISATION,
        ),
    ] = None,
    label_smoothing: Annotated[
        Optional[float],
        typer.Option(help="Cross-entropy label smoothing.", show_default=RECIPE, rich_help_panel=OPTIMISATION),
    ] = None,
    augment: Annotated[
        Optional[bool],
        typer.Option(
            "--augment/--no-augment",
            help="Random rotation, scale and shift of each batch.",
            show_default=RECIPE,
            rich_help_panel=OPTIMISATION,
        ),
    ] = None,
    robust_augment: Annotated[
        Optional[bool],
        typer.Option(
            "--robust-augment/--no-robust-augment",
            help="Classifiers, with --augment: also random slant, pen width and blur, for photos and drawings.",
            show_default=RECIPE,
            rich_help_panel=OPTIMISATION,
        ),
    ] = None,
    classes: Annotated[
        Optional[str],
        typer.Option(
            help="Train only on these digits, e.g. 0,1,2.", metavar="DIGITS", show_default="all", rich_help_panel=DATA
        ),
    ] = None,
    per_class: Annotated[
        Optional[int],
        typer.Option(help="At most this many training images per class.", show_default="all", rich_help_panel=DATA),
    ] = None,
    val_split: Annotated[
        Optional[float],
        typer.Option(
            help="Fraction of the training set held out for validation.",
            show_default="0, or 0.1 with --early-stopping",
            rich_help_panel=DATA,
        ),
    ] = None,
    no_calibrate: Annotated[
        bool,
        typer.Option(
            "--no-calibrate",
            help="Classifiers: do not fit a temperature to their confidences (by default it is fitted on the"
            " validation split, else on 5% of the training images held out for it).",
            rich_help_panel=DATA,
        ),
    ] = False,
    early_stopping: Annotated[
        Optional[int],
        typer.Option(
            metavar="PATIENCE",
            help="Stop after PATIENCE epochs without a better validation accuracy; keeps the best weights.",
            show_default="off",
            rich_help_panel=STOPPING,
        ),
    ] = None,
    target_accuracy: Annotated[
        Optional[float],
        typer.Option(
            help="Stop as soon as held-out accuracy (validation split, else test set) reaches this, e.g. 0.99.",
            rich_help_panel=STOPPING,
        ),
    ] = None,
    check_every: Annotated[
        Optional[float],
        typer.Option(
            help="With --target-accuracy: check every this fraction of an epoch.",
            show_default=_recipes_default("check_every"),
            rich_help_panel=STOPPING,
        ),
    ] = None,
    temperature: Annotated[
        Optional[float],
        typer.Option(help="NT-Xent temperature.", show_default=RECIPE, rich_help_panel=FAMILY),
    ] = None,
    margin: Annotated[
        Optional[float],
        typer.Option(
            help="Triplet-loss margin, on squared distances of unit vectors.",
            show_default="0.2",
            rich_help_panel=FAMILY,
        ),
    ] = None,
    mining: Annotated[
        Optional[Mining],
        typer.Option(
            help=f"Triplet mining in each batch: {either(Mining)}.",
            metavar="NAME",
            parser=choice(Mining),
            show_default="batch-hard",
            rich_help_panel=FAMILY,
        ),
    ] = None,
    ssl_weight: Annotated[
        Optional[float],
        typer.Option(
            help="Triplet models: weight of self-supervision (NT-Xent) on unlabelled training images; 0 turns it off.",
            show_default=RECIPE,
            rich_help_panel=FAMILY,
        ),
    ] = None,
    triplet_weight: Annotated[
        Optional[float],
        typer.Option(
            help="Triplet models: weight of the triplet loss on the labelled images; 0 turns it off.",
            show_default="1",
            rich_help_panel=FAMILY,
        ),
    ] = None,
    clusters: Annotated[
        Optional[int],
        typer.Option(
            help="Triplet models trained on some labels: group the unlabelled training images into this many"
            " clusters (SCAN on the embedding) and train on the confident ones as labelled; 0 turns it off.",
            show_default=RECIPE,
            rich_help_panel=FAMILY,
        ),
    ] = None,
    cluster_from: Annotated[
        Optional[int],
        typer.Option(
            help="With --clusters: the first epoch that groups and self-labels (the groups are redone each epoch).",
            show_default=RECIPE,
            rich_help_panel=FAMILY,
        ),
    ] = None,
    bags: Annotated[
        Optional[int],
        typer.Option(
            help="MIL: training bags (alternately positive and negative). Without --epochs, the recipe's epochs"
            " (set for 50 bags) scale with sqrt(50 / N), at least 5 (`mnist models mil`: at the default 100).",
            show_default="100",
            rich_help_panel=FAMILY,
        ),
    ] = None,
    target: Annotated[
        Optional[int],
        typer.Option(help="MIL: a bag is positive if it holds this digit.", show_default="9", rich_help_panel=FAMILY),
    ] = None,
    bag_size: Annotated[
        Optional[float],
        typer.Option(help="MIL: mean number of images in a bag.", show_default="10", rich_help_panel=FAMILY),
    ] = None,
    bag_std: Annotated[
        Optional[float],
        typer.Option(
            help="MIL: standard deviation of the bag size (at least 2 images).",
            show_default="2",
            rich_help_panel=FAMILY,
        ),
    ] = None,
    remix: Annotated[
        Optional[int],
        typer.Option(
            help="MIL: new bags per training bag each epoch, mixed from the training bags' own images by bag label.",
            show_default=RECIPE,
            rich_help_panel=FAMILY,
        ),
    ] = None,
    instance_loss: Annotated[
        Optional[float],
        typer.Option(
            help="MIL: weight of a loss on each bag's highest-scoring image alone (0: off).",
            show_default=RECIPE,
            rich_help_panel=FAMILY,
        ),
    ] = None,
    restarts: Annotated[
        Optional[int],
        typer.Option(
            help="MIL: times a run whose bag loss is still high half-way may start over with fresh weights "
            "(one attempt); with several, pretrained, extra attempts when none fitted its bags.",
            show_default=RECIPE,
            rich_help_panel=FAMILY,
        ),
    ] = None,
    attempts: Annotated[
        Optional[int],
        typer.Option(
            help="MIL: train this many times from fresh weights and keep the attempt that fits its bags best.",
            show_default=RECIPE,
            rich_help_panel=FAMILY,
        ),
    ] = None,
    keep: Annotated[
        Optional[str],
        typer.Option(
            metavar="best|mean",
            help="MIL: with several --attempts, keep the one that fits its bags best, or those that fit their bags "
            "with their answers averaged.",
            show_default=RECIPE,
            rich_help_panel=FAMILY,
        ),
    ] = None,
    pretrain_epochs: Annotated[
        Optional[int],
        typer.Option(
            help="MIL: epochs of self-supervised (SimCLR) training on the training bags' own images before MIL "
            "training; no label is read (0: none).",
            show_default=RECIPE,
            rich_help_panel=FAMILY,
        ),
    ] = None,
    encoder: Annotated[
        Optional[str],
        typer.Option(
            metavar="RUN",
            help="MIL: start the instance network from this simclr run's encoder.",
            autocompletion=complete.run_names,
            rich_help_panel=FAMILY,
        ),
    ] = None,
    members: Annotated[
        Optional[int],
        typer.Option(
            help="Ensembles: members to train, with seeds SEED, SEED+1, ...",
            show_default=RECIPE,
            rich_help_panel=ENSEMBLE,
        ),
    ] = None,
    arch: Annotated[
        Optional[str],
        typer.Option(
            metavar="MODEL,...",
            help="Ensembles: the members' models, given to them in turn (e.g. cnn,lenet); each trains by its own"
            " recipe, with the options given here.",
            show_default=RECIPE,
            autocompletion=complete.model_names,
            rich_help_panel=ENSEMBLE,
        ),
    ] = None,
    combine: Annotated[
        Optional[str],
        typer.Option(
            metavar="HOW",
            help="Ensembles: soft (mean probability), vote (majority) or select (weights chosen on the validation"
            " split to minimise its loss).",
            show_default=RECIPE,
            rich_help_panel=ENSEMBLE,
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            help="Ensembles' members, or --runs' repeats, trained at once, each in a process of its own with its"
            " share of the CPU threads (ensembles: also with --resume).",
            rich_help_panel=ENSEMBLE,
        ),
    ] = 1,
    from_runs: Annotated[
        Optional[str],
        typer.Option(
            "--from",
            metavar="RUN,...",
            help="Ensembles: make one from these finished classifier runs instead of training members.",
            autocompletion=complete.run_names,
            rich_help_panel=ENSEMBLE,
        ),
    ] = None,
    split_seed: Annotated[
        Optional[int],
        typer.Option(
            help="Seeds which images --val-split (and calibration) hold out, instead of --seed: runs with the same"
            " one hold out the same images (ensemble members do).",
            show_default="SEED",
            parser=helptext.seed,
            rich_help_panel=DATA,
        ),
    ] = None,
    arg: Annotated[
        Optional[list[str]],
        typer.Option(
            "--arg", metavar="KEY=VALUE", help="Model argument, e.g. --arg width=32 (repeatable).", rich_help_panel=RUN
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            help="Random seed (initialisation, shuffling, split, augmentation).",
            parser=helptext.seed,
            rich_help_panel=RUN,
        ),
    ] = 0,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    name: Annotated[
        Optional[str],
        typer.Option(help="Name of the run.", metavar="NAME", show_default="MODEL-DATE-TIME", rich_help_panel=RUN),
    ] = None,
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard",
            help="Also write TensorBoard event files into the run folder (needs tensorboard).",
            rich_help_panel=RUN,
        ),
    ] = False,
    accumulate: Annotated[
        Optional[int],
        typer.Option(
            help="Add up the gradients of this many batches before each optimizer step.",
            show_default="1",
            rich_help_panel=OPTIMISATION,
        ),
    ] = None,
    precision: Annotated[
        Optional[Precision],
        typer.Option(
            help="fp32; bf16 (autocast); fp16 (CUDA only, with a gradient scaler); auto: bf16 where the device "
            "computes it natively (a CPU with AVX-512 BF16 or AMX, a CUDA GPU with bf16), else fp32.",
            metavar="NAME",
            parser=choice(Precision),
            show_default=_recipes_default("precision"),
            rich_help_panel=OPTIMISATION,
        ),
    ] = None,
    resume: Annotated[
        Optional[str],
        typer.Option(
            metavar="RUN",
            help="Continue a stopped run from its last completed epoch (only --device and --json may be given with it).",
            autocompletion=complete.run_names,
            rich_help_panel=RUN,
        ),
    ] = None,
    runs: Annotated[
        int,
        typer.Option(
            help="Train this many runs (1-100), with seeds SEED, SEED+1, ... (named NAME-1, ...); report mean and std.",
            rich_help_panel=RUN,
        ),
    ] = 1,
    nproc: Annotated[
        Optional[str],
        typer.Option(
            metavar="N",
            help="Train as N data-parallel processes on this machine (torchrun's launcher, DistributedDataParallel;"
            " auto: one per GPU); --batch-size stays the global batch. Also with --resume.",
            rich_help_panel=RUN,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a model on MNIST and save it as a checkpoint.

    An option whose default reads (recipe) takes the model's own value; `mnist models --json` lists them.
    """
    if resume is not None:
        check_alone(ctx, "resume", allowed={"device", "json_out", "jobs", "nproc"})
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    if rank.isdigit() and world.isdigit() and 0 < int(rank) < int(world):
        render.quiet(f"process {rank}")  # one of several: rank 0 reports for all
    with render.starting():
        from mnistcli import api

        if resume is None and jobs == 1 and nproc is None and world in ("", "1"):
            api.prefetch_mnist(data_dir)  # read in the background while torch is imported (data/prefetch.py)
        api.load("train")  # torch, under the spinner

    processes = api.nproc(nproc, device.value) if nproc is not None else 1

    ensemble = resume is None and api.trains_members(model)
    if not ensemble and resume is None:
        if from_runs is not None:
            raise UsageError("--from is for ensembles (`mnist train ensemble`)")
        if jobs != 1 and runs == 1:
            raise UsageError("--jobs is for ensembles (`mnist train ensemble`) and --runs (repeats trained at once)")
        if jobs != 1 and nproc is not None:
            raise UsageError("--jobs and --nproc both share out the cores: give one of them")
    if resume is not None and processes > 1:  # a stopped ensemble is refused there, as a fresh one is
        api.check_resume_launch(resume, processes, device.value if given(ctx, "device") else None)
        return _launch(ctx, processes)
    stopped = api.stopped_ensemble(resume) if resume is not None else None
    if stopped is not None:
        with progress.RunsProgress() as view:
            report = api.resume_ensemble(
                stopped,
                device=device.value if given(ctx, "device") else None,
                jobs=jobs,
                on_member=view.run,
                on_work=view.work,
            )
        render.ensemble_summary(report)
        if json_out:
            render.train_json(report)
        return
    if resume is not None and jobs != 1:
        raise UsageError(f"--jobs is for ensembles; {resume!r} is not a stopped ensemble")
    if resume is not None:
        with progress.download_progress() as on_download, progress.TrainProgress() as bar:
            resumed = api.resume(
                resume,
                device=device.value if given(ctx, "device") else None,
                on_step=bar.step,
                on_epoch=bar.epoch,
                on_download=on_download,
                on_work=bar.work,
            )
        if resumed is None:  # another process of a data-parallel run: rank 0 reports
            return
        render.train_summary(resumed)
        if json_out:
            render.train_json(resumed)
        return

    options = dict(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer.value if optimizer else None,
        momentum=momentum,
        weight_decay=weight_decay,
        scheduler=scheduler.value if scheduler else None,
        label_smoothing=label_smoothing,
        temperature=temperature,
        margin=margin,
        mining=mining.value if mining else None,
        ssl_weight=ssl_weight,
        triplet_weight=triplet_weight,
        clusters=clusters,
        cluster_from=cluster_from,
        bags=bags,
        target=target,
        bag_size=bag_size,
        bag_std=bag_std,
        remix=remix,
        encoder=encoder,
        instance_loss=instance_loss,
        restarts=restarts,
        attempts=attempts,
        pretrain_epochs=pretrain_epochs,
        keep=keep,
        augment=augment,
        robust_augment=robust_augment,  # None: the recipe's
        val_split=val_split,
        calibrate=False if no_calibrate else None,
        early_stopping=early_stopping,
        target_accuracy=target_accuracy,
        check_every=check_every,
        seed=seed,
        device=device.value,
        classes=parse_classes(classes),
        per_class=per_class,
        accumulate=accumulate,
        precision=precision.value if precision else None,
        split_seed=split_seed,
        members=members,
        arch=arch,
        combine=combine,
    )
    # Repeated ensembles take the next seeds after each other's members: no member is trained twice.
    stride = api.members_of(options) if ensemble else 1
    if not ensemble and jobs != 1:
        api.check_runs(model, options, parse_model_args(arg), jobs, tensorboard)  # before a name is taken or said
    names, seeds = api.repeat_names(name, runs, model), api.repeat_seeds(seed, runs, stride)
    if processes > 1:
        with progress.download_progress() as on_download:
            api.check_launch(model, {**options, "seed": seeds[0]}, processes, list(names), data_dir, on_download)
        return _launch(ctx, processes)
    if not ensemble and jobs != 1:
        reports = _at_once(model, options, parse_model_args(arg), names, seeds, jobs, data_dir, tensorboard)
    else:
        reports = []
        for i, (run_name, run_seed) in enumerate(zip(names, seeds, strict=True)):
            if runs > 1:
                render.note(f"run {i + 1} of {runs} (seed {run_seed})")
            if ensemble:
                with progress.download_progress() as on_download, progress.RunsProgress() as view:
                    report = api.train_ensemble(
                        {**options, "seed": run_seed},
                        parse_model_args(arg),
                        name=run_name,
                        data_dir=data_dir,
                        jobs=jobs,
                        sources=parse_runs(from_runs) if from_runs is not None else None,
                        on_member=view.run,
                        on_download=on_download,
                        on_work=view.work,
                        tensorboard=tensorboard,
                    )
                render.ensemble_summary(report)
                reports.append(report)
                continue
            with progress.download_progress() as on_download, progress.TrainProgress() as bar:
                trained = api.train(
                    model,
                    {**options, "seed": run_seed},
                    parse_model_args(arg),
                    name=run_name,
                    data_dir=data_dir,
                    on_step=bar.step,
                    on_epoch=bar.epoch,
                    on_download=on_download,
                    tensorboard=tensorboard,
                    on_work=bar.work,
                )
            if trained is None:  # another process of a data-parallel run: rank 0 reports
                continue
            render.train_summary(trained)
            reports.append(trained)
    if not reports:
        return
    if runs == 1:
        if json_out:
            render.train_json(reports[0])
    else:
        summary = api.summarize(reports)
        render.repeat_json(summary) if json_out else render.repeat_summary(summary)
    remember_data_dir(data_dir)


def _at_once(
    model: str,
    options: dict[str, Any],
    model_args: dict[str, Any],
    names: list[str | None],
    seeds: list[int],
    jobs: int,
    data_dir: str | None,
    tensorboard: bool,
) -> list[Any]:
    """`--runs N --jobs J`: the repeats trained J at a time, each in a worker process; their reports, in seed order."""
    from mnistcli import api

    render.note(f"{len(seeds)} runs (seeds {seeds[0]}-{seeds[-1]}), up to {min(jobs, len(seeds))} at a time")
    with progress.download_progress() as on_download, progress.RunsProgress() as view:
        reports = api.train_runs(
            model,
            options,
            model_args,
            names,
            seeds,
            jobs,
            data_dir=data_dir,
            on_run=view.run,
            on_download=on_download,
            tensorboard=tensorboard,
        )
    for report in reports:
        render.train_summary(report)
    return reports


def _launch(ctx: typer.Context, processes: int) -> None:
    """This command again, as `processes` data-parallel processes (api/launching.py); exits as they did."""
    from mnistcli import api

    args = sys.argv[1:]
    if not _is_this_command(ctx, args):  # called from Python (a test, an embedding program), not from a shell
        raise UsageError("--nproc starts this command again as N processes: run `mnist train ... --nproc N` in a shell")
    try:
        api.launch(processes, _without_nproc(args))
    except api.LaunchFailed as e:
        if not e.said:
            render.error(str(e))
        raise typer.Exit(e.code) from None


def _is_this_command(ctx: typer.Context, args: list[str]) -> bool:
    """Whether the process's command line `args` is `mnist ... train` with the very options being run (what `--nproc`
    starts again), and not another program's arguments."""
    if "train" not in args:
        return False
    try:
        again = ctx.command.make_context("train", args[args.index("train") + 1 :], resilient_parsing=True)
    except Exception:
        return False
    return again.params == ctx.params


def _without_nproc(args: list[str]) -> list[str]:
    """The command line `args` without `--nproc N` (or `--nproc=N`): what each process of `--nproc` runs."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept
