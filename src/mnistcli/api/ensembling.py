"""`mnist train ensemble`: each member trained as a run of its own, then all of them saved as one checkpoint.

An ensemble's folder holds, while it trains, `plan.json` (what was asked: the members, their
options, the data) and `members/NN-MODEL/`, one ordinary run folder per member (its log, its resume
snapshot, then its checkpoint). A member that finished stays finished: `mnist train --resume NAME`
continues the member that was stopped and trains only those not yet done. Once every member is
there, the ensemble is combined and saved beside them as `model.safetensors` and `meta.json`, and
is then a checkpoint like any other (`plan.json` goes).

The members hold out the same validation images (`--val-split`, drawn with one `split_seed`), so
how they are combined (`--combine select`) and the ensemble's temperature are fitted on images no
member trained on, and never on the test set. `--from RUN,...` copies finished runs in as members.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mnistcli import store
from mnistcli.api import calibrating, parallel, training
from mnistcli.api.common import a_model, data_folder, load_tensors, params_count
from mnistcli.atomic import atomic_write_text
from mnistcli.config import TrainConfig, field_names
from mnistcli.data.tensors import TensorData
from mnistcli.engine import tensorboard as tb_events
from mnistcli.engine.device import choose_device
from mnistcli.errors import CheckpointError, Interrupted, MnistError, UsageError
from mnistcli.families import Data, get_family
from mnistcli.families.classify import ClassifyParams
from mnistcli.families.ensemble import EnsembleFamily, EnsembleParams
from mnistcli.models.ensemble import Ensemble, combine_probabilities
from mnistcli.protocols.combining import nll, select_weights
from mnistcli.protocols.inference import evaluate_classifier
from mnistcli.registry import create_model, get_entry
from mnistcli.reports import TrainReport
from mnistcli.store.checkpoint import Checkpoint, DataSpec, ModelSpec, Results
from mnistcli.store.runs import MEMBERS, PLAN, open_run
from mnistcli.store.snapshot import SNAPSHOT
from mnistcli.work import notify

MemberHooks = Callable[[str], Any]  # one member's hooks by its name: on_step, on_epoch, on_work (training.Hooks)
# The options every member shares with the ensemble (what is held out, and from which images).
SHARED = ("val_split", "split_seed", "classes", "per_class", "device")


def train(
    options: dict[str, Any],
    model_args: dict[str, Any] | None = None,
    name: str | None = None,
    data_dir: str | None = None,
    jobs: int = 1,
    sources: list[str] | None = None,
    on_member: MemberHooks | None = None,
    on_download: Any = None,
    on_work: Any = None,
    tensorboard: bool = False,
) -> TrainReport:
    """Train an ensemble (`options`: the ensemble's own, `members`/`arch`/`combine`, and training options every
    member takes) and save it; or, with `sources`, combine finished classifier runs. Returns the ensemble's report.

    Raises `UsageError` for options that cannot be honoured, before any training; `Interrupted` on Ctrl-C
    (finished members are kept; `resume` goes on)."""
    t0 = time.perf_counter()
    entry = get_entry("ensemble")
    config, params = EnsembleFamily.configure(entry.recipe, options)
    if not 1 <= jobs <= 64:
        raise UsageError("--jobs must be 1-64")
    if tensorboard:
        tb_events.require()  # every member would need it: refused before anything starts
    if name is not None:
        store.check_new_name(name)
    given = {k: v for k, v in options.items() if v is not None}
    if sources is not None:
        own = sorted(k for k in given if k not in ("seed", "device", "combine", "calibrate"))
        if own or model_args:
            flags = ", ".join("--" + k.replace("_", "-") for k in own) or "--arg"
            raise UsageError(f"{flags}: with --from the members are trained already; only --combine applies")
        members = _sources(sources)
    else:
        members = _planned(params, config)
    split_seed = config.split_seed if config.split_seed is not None else config.seed
    member_options = {
        k: v for k, v in given.items() if k not in field_names(EnsembleParams) - field_names(ClassifyParams)
    }
    member_options.update(val_split=config.val_split, split_seed=split_seed)
    if params.combine == "select" and sources is None and not config.val_split and given.get("calibrate") is False:
        raise UsageError("--combine select chooses weights on held-out images: keep --val-split above 0")
    if sources is None:
        _check_members(members, member_options, model_args or {})
    folder = data_folder(data_dir, on_download)
    plan = {
        "members": members,
        "member_options": member_options,
        "model_args": model_args or {},
        # The ensemble's own options (meta.json's `config`); what its members were given is under `member_options`.
        "options": {
            **{k: v for k, v in config.to_dict().items() if k in ("seed", *SHARED)},
            **{k: getattr(params, k) for k in ("members", "arch", "combine", "calibrate")},
            "split_seed": split_seed,
            "member_options": member_options,
        },
        "data": str(folder),
        "tensorboard": tensorboard,
        "from": sources is not None,
    }
    run_dir = store.begin("ensemble", name)
    try:
        (run_dir / MEMBERS).mkdir()
        for member in members if sources is not None else []:
            shutil.copytree(member.pop("source"), run_dir / MEMBERS / member["name"])
        atomic_write_text(run_dir / PLAN, json.dumps(plan, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return _complete(run_dir, plan, jobs, on_member, on_work, t0)


def resume(
    folder: Path,
    device: str | None = None,
    jobs: int = 1,
    on_member: MemberHooks | None = None,
    on_work: Any = None,
) -> TrainReport:
    """Go on with the stopped ensemble in `folder`: finish the stopped member, train the ones not started, combine."""
    t0 = time.perf_counter()
    plan = read_plan(folder)
    if device is not None:
        plan["member_options"]["device"] = plan["options"]["device"] = device
    return _complete(folder, plan, jobs, on_member, on_work, t0)


def trains_members(model: str) -> bool:
    """Whether `mnist train MODEL` trains several runs (an ensemble) rather than one. Raises `ModelError` if unknown."""
    return get_family(get_entry(model).family).trains_members


def stopped_ensemble(ref: str) -> Path | None:
    """The folder of `ref` if it is a stopped ensemble (`mnist train --resume` goes on with its plan), else None."""
    try:
        folder = store.stopped_run(ref)
    except CheckpointError:
        return None
    return folder if (folder / PLAN).is_file() else None


def read_plan(folder: Path) -> dict[str, Any]:
    """The plan of the ensemble in `folder`. Raises `CheckpointError` if it is unreadable."""
    try:
        plan = json.loads((folder / PLAN).read_text(encoding="utf-8"))
        assert isinstance(plan, dict) and isinstance(plan["members"], list) and isinstance(plan["options"], dict)
        for member in plan["members"]:
            assert store.NAME_RE.fullmatch(member["name"]) and isinstance(member["model"], str)
        return plan
    except (OSError, UnicodeDecodeError, ValueError, AssertionError, KeyError, TypeError) as e:
        raise CheckpointError(f"{folder / PLAN}: not a readable ensemble plan ({e})") from None


def _planned(params: EnsembleParams, config: TrainConfig) -> list[dict[str, Any]]:
    """The members to train: `--arch` names in turn, seeds `--seed`, `--seed + 1`, ..."""
    names = params.architectures()
    if config.seed + params.members - 1 >= 2**63:
        raise UsageError("--seed + --members must stay below 2**63")
    width = max(2, len(str(params.members)))
    return [
        {"name": f"{i + 1:0{width}d}-{names[i % len(names)]}", "model": names[i % len(names)], "seed": config.seed + i}
        for i in range(params.members)
    ]


def _check_members(members: list[dict[str, Any]], options: dict[str, Any], model_args: dict[str, Any]) -> None:
    """Build each member model once and its options, so what one of them refuses fails before any training.
    Raises `ModelError` or `UsageError`."""
    for name in dict.fromkeys(m["model"] for m in members):
        entry = get_entry(name)
        family = get_family(entry.family)
        config, params = family.configure(entry.recipe, options)
        family.check(params, config)
        create_model(name, **model_args)


def _sources(refs: list[str]) -> list[dict[str, Any]]:
    """The finished classifier runs `--from` names, as members to copy in."""
    if len(refs) < 1:
        raise UsageError("--from takes finished classifier runs, comma-separated")
    runs = [store.resolve(ref) for ref in refs]
    paths = [r.path.resolve() for r in runs]
    if len(set(paths)) < len(paths):
        raise UsageError("--from names the same run twice")
    for run in runs:
        if run.family != "classify":
            raise UsageError(f"--from {run.name}: an ensemble's members are classifiers; it is {a_model(run.family)}")
    width = max(2, len(str(len(runs))))
    return [
        {"name": f"{i + 1:0{width}d}-{r.name}"[:100], "model": r.model, "seed": r.info.seed, "source": str(r.path)}
        for i, r in enumerate(runs)
    ]


def _complete(
    run_dir: Path, plan: dict[str, Any], jobs: int, on_member: MemberHooks | None, on_work: Any, t0: float
) -> TrainReport:
    """Train the members not done yet, then combine, test and save the ensemble."""
    todo = [m for m in plan["members"] if not (run_dir / MEMBERS / m["name"] / store.META).exists()]
    hooks = on_member or (lambda name: training.Hooks())
    try:
        if jobs > 1 and len(todo) > 1:
            tasks = [parallel.Task(m["name"], train_member, (str(run_dir), plan, m)) for m in todo]
            outcome = parallel.run_tasks(tasks, jobs, lambda n: _relay(hooks(n)))
            if outcome.errors:
                name, problem = next(iter(outcome.errors.items()))
                raise MnistError(
                    f"member {name}: {problem} (members that finished are kept: `mnist train --resume {run_dir.name}`)"
                )
            if outcome.interrupted:
                raise Interrupted("interrupted")
        else:
            for member in todo:
                h = hooks(member["name"])
                train_member(str(run_dir), plan, member, on_step=h.on_step, on_epoch=h.on_epoch, on_work=h.on_work)
    except (Interrupted, KeyboardInterrupt):  # in a member's training, or before it (its data loading)
        raise Interrupted(_stopped(run_dir, plan)) from None
    return _combine(run_dir, plan, on_work, t0)


def _relay(hooks: training.Hooks) -> parallel.Relay:
    return parallel.Relay(hooks.on_step, hooks.on_epoch, hooks.on_work)


def _stopped(run_dir: Path, plan: dict[str, Any]) -> str:
    """What Ctrl-C left: the message to show (an ensemble with nothing to go on from is removed, as a run is)."""
    if not store.member_folders(run_dir):  # no member got as far as a snapshot: nothing to resume
        shutil.rmtree(run_dir, ignore_errors=True)
        return "interrupted before training started"
    done = sum((run_dir / MEMBERS / m["name"] / store.META).exists() for m in plan["members"])
    return (
        f"interrupted with {done} of {len(plan['members'])} members done and kept: "
        f"resume with `mnist train --resume {run_dir.name}`"
    )


def train_member(
    run_dir: str,
    plan: dict[str, Any],
    member: dict[str, Any],
    on_step: Any = None,
    on_epoch: Any = None,
    on_work: Any = None,
) -> dict[str, Any]:
    """Train (or go on with) one member into `run_dir/members/`; returns its entry (name, model, seed, accuracy).

    Module-level, so a worker process can run it (api/parallel.py)."""
    root = Path(run_dir) / MEMBERS
    folder = root / member["name"]
    if (folder / SNAPSHOT).exists():
        report = training.resume(str(folder), plan["member_options"].get("device"), on_step, on_epoch, None, on_work)
    else:
        if folder.exists():  # stopped before its first snapshot: nothing to go on from
            shutil.rmtree(folder)
        report = training.train(
            member["model"],
            {**plan["member_options"], "seed": member["seed"]},
            plan["model_args"],
            name=member["name"],
            data_dir=plan["data"],
            on_step=on_step,
            on_epoch=on_epoch,
            on_work=on_work,
            tensorboard=bool(plan.get("tensorboard")),
            root=root,
        )
    notify(on_work, f"done: test accuracy {100 * report.test_accuracy:.2f}% after {report.seconds:.1f} s of training")
    return {"name": member["name"], "model": member["model"], "seed": member["seed"], "accuracy": report.test_accuracy}


def _combine(run_dir: Path, plan: dict[str, Any], on_work: Any, t0: float) -> TrainReport:
    """Combine the finished members (weights and temperature fitted on their shared held-out images), test, save."""
    options = plan["options"]
    config = TrainConfig(**{k: v for k, v in options.items() if k in field_names(TrainConfig)})
    params = EnsembleParams(**{k: v for k, v in options.items() if k in field_names(EnsembleParams)})
    family = EnsembleFamily(params, config)
    device = choose_device(config.device)
    runs = [open_run(run_dir / MEMBERS / m["name"]) for m in plan["members"]]
    members = [store.load(r, device) for r in runs]
    temperatures = [r.temperature for r in runs]
    folder = Path(plan["data"])
    full_train, full_test = load_tensors("train", folder, device), load_tensors("test", folder, device)
    held = _held_out(runs, full_train)
    classes = runs[0].info.data.classes
    test = full_test.select(tuple(classes) if len(classes) < 10 else None, None, torch.Generator())
    combine = "vote" if params.combine == "vote" else "soft"
    weights = [1.0] * len(members)
    selection: dict[str, Any] | None = None
    if params.combine == "select":
        if held is None:
            raise UsageError(
                "--combine select chooses weights on images every member held out; these members held out different"
                " ones (train them with the same --val-split and --split-seed)"
            )
        probabilities = _member_probabilities(members, temperatures, held)
        labels = held.labels.cpu()
        weights = select_weights(probabilities, labels)
        equal = nll(combine_probabilities(probabilities, "soft", torch.ones(len(members))), labels)
        chosen = nll(combine_probabilities(probabilities, "soft", torch.tensor(weights)), labels)
        selection = {"weights": weights, "val_loss": chosen, "val_loss_equal_weights": equal, "images": len(held)}
    model = Ensemble(members, combine, weights, temperatures).to(device).eval()
    if held is not None and calibrating.wanted(family):
        calibration = calibrating.fit(model, family, held, "validation")
    else:
        why = "--no-calibrate" if not calibrating.wanted(family) else "its members held out different images"
        calibration = {"method": "temperature", "temperature": 1.0, "fitted_on": None, "note": why}
    data = Data(full_train, held, test, full_train, full_test)
    result = family.test(model, data, on_work)
    entries = [
        {
            "name": m["name"],
            "model": r.model,
            "seed": r.info.seed,
            "test_accuracy": r.test_accuracy,
            "seconds": r.info.seconds,
        }
        for m, r in zip(plan["members"], runs, strict=True)
    ]
    seconds = sum(float(r.info.seconds or 0.0) for r in runs)
    args = {
        "members": [{"name": r.model, "args": r.info.model.args} for r in runs],
        "combine": combine,
        "weights": weights,
        "temperatures": temperatures,
    }
    checkpoint = Checkpoint(
        model=ModelSpec("ensemble", args, "ensemble", params_count(model)),
        config=options,
        data=DataSpec(
            folder=str(folder),
            train_images=runs[0].info.data.train_images,
            val_images=len(held) if held is not None else 0,
            calibration_images=0,
            test_images=len(test),
            unlabelled_images=0,
            classes=tuple(classes),
        ),
        history=[],
        results=Results(result.accuracy, result.loss, "accuracy", {}, None, False, None),
        family_entries={
            "calibration": calibration,
            "members": entries,
            **({"selection": selection} if selection is not None else {}),
        },
        preprocessing=training.PREPROCESSING,
        seconds=seconds,
        device=str(device),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=training.versions(),
    )
    run = store.save(model, checkpoint, run_dir)
    (run_dir / PLAN).unlink(missing_ok=True)
    return TrainReport(
        run=run,
        options=options,
        test_accuracy=result.accuracy,
        test_loss=result.loss,
        seconds=seconds,
        total_seconds=time.perf_counter() - t0,
        history=[],
        stopped_early=False,
        device=str(device),
        calibration=calibration,
        members=entries,
        selection=selection,
    )


def _member_probabilities(members: list[torch.nn.Module], temperatures: list[float], held: TensorData) -> torch.Tensor:
    """Each member's calibrated probabilities on the held-out images: (members, N, 10)."""
    out = []
    for member, t in zip(members, temperatures, strict=True):
        logits = evaluate_classifier(member, held).logits
        assert logits is not None
        out.append(torch.softmax(torch.from_numpy(logits) / t, dim=1))
    return torch.stack(out)


def _held_out(runs: list[store.Run], full_train: TensorData) -> TensorData | None:
    """The training images every member held out (validation split, else calibration images), or None if their
    held-out images differ (members of `--from` trained with different seeds or splits)."""
    configs = [r.info.config for r in runs]
    keys = ("split_seed", "val_split", "classes", "per_class", "calibrate")
    first = configs[0]
    if first.get("split_seed") is None or any(any(c.get(k) != first.get(k) for k in keys) for c in configs):
        return None
    config = TrainConfig(**{k: v for k, v in first.items() if k in field_names(TrainConfig)})
    splitter = torch.Generator().manual_seed(int(first["split_seed"]))
    kept, val = training.training_split(full_train, config, splitter)
    if val is not None:
        return val
    family = get_family("classify")(ClassifyParams(calibrate=bool(first.get("calibrate", True))), config)
    _, held, _ = calibrating.hold_out(family, kept, None, splitter)
    return held
