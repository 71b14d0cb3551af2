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
from pathlib import Path
from typing import Any

from mnistcli import store
from mnistcli.api import parallel, training, voting
from mnistcli.api.common import a_model, check_testable, data_folder
from mnistcli.atomic import atomic_write_text
from mnistcli.config import TrainConfig, field_names
from mnistcli.engine import tensorboard as tb_events
from mnistcli.errors import CheckpointError, FileProblem, Interrupted, MnistError, UsageError
from mnistcli.families import get_family
from mnistcli.families.classify import ClassifyParams
from mnistcli.families.ensemble import EnsembleFamily, EnsembleParams
from mnistcli.registry import create_model, get_entry, recorded_args, saved_args
from mnistcli.reports import TrainReport
from mnistcli.store import lock
from mnistcli.store.runs import MEMBERS, PLAN, SNAPSHOT
from mnistcli.work import notify

MemberHooks = Callable[[str], Any]  # one member's hooks by its name: on_step, on_epoch, on_work (training.Hooks)
# The options every member shares with the ensemble (what is held out, and from which images).
SHARED = ("val_split", "split_seed", "classes", "per_class", "device")
MAX_JOBS = 64


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
    if not 1 <= jobs <= MAX_JOBS:
        raise UsageError(f"--jobs must be 1-{MAX_JOBS}")
    if tensorboard:
        tb_events.require()  # every member would need it: refused before anything starts
    if name is not None:
        store.check_new_name(name)
    given = {k: v for k, v in options.items() if v is not None}
    if sources is not None:
        members, options_of, trained_on, classes = _sources(sources, given, model_args, jobs, tensorboard, params)
        if data_dir is None and trained_on is not None:
            data_dir = trained_on  # their held-out images are rebuilt from the images they were trained on
        member_options: dict[str, Any] = {}
        own = {
            **{k: options_of[k] for k in (*SHARED, "seed") if k in options_of},
            "device": config.device,
            "members": len(members),
            "arch": ",".join(m["model"] for m in members),
            "combine": params.combine,
            "calibrate": params.calibrate,
            "from": [m["source"] for m in members],
        }
    else:
        members = _planned(params, config)
        split_seed = config.split_seed if config.split_seed is not None else config.seed
        member_options = {
            k: v for k, v in given.items() if k not in field_names(EnsembleParams) - field_names(ClassifyParams)
        }
        member_options.update(val_split=config.val_split, split_seed=split_seed)
        if member_options.get("augment") is not False:  # with --no-augment there is nothing to make robust
            member_options.setdefault("robust_augment", params.robust_augment)  # the ensemble's recipe, unless given
        if params.combine == "select" and not config.val_split:
            raise UsageError(
                "--combine select chooses weights on the validation images every member holds out: give --val-split above 0"
            )
        _check_members(members, member_options, model_args or {})
        # Each member's arguments as its run will record them, so a plan resumed after a model gained an argument
        # trains its members as it would have then (registry `legacy`).
        members = [{**m, "args": recorded_args(m["model"], model_args or {})} for m in members]
        own = {
            **{k: v for k, v in config.to_dict().items() if k in ("seed", *SHARED)},
            **{k: getattr(params, k) for k in ("members", "arch", "combine", "calibrate")},
            "split_seed": split_seed,
        }
    folder = data_folder(data_dir, on_download)
    check_testable(classes if sources is not None else config.classes, folder)  # before the run's folder is begun
    plan = {
        "members": members,
        "member_options": member_options,
        "model_args": model_args or {},
        # The ensemble's own options (meta.json's `config`), with what every member was given beside its seed.
        "options": {**own, "member_options": member_options, "member_args": model_args or {}},
        "data": str(folder),
        "tensorboard": tensorboard,
        "from": sources is not None,
    }
    run_dir = store.begin("ensemble", name)  # claimed until the ensemble is saved (store/lock.py); members each too
    try:
        try:
            (run_dir / MEMBERS).mkdir()
            for member in members if sources is not None else []:
                shutil.copytree(member["source"], run_dir / MEMBERS / member["name"])
            atomic_write_text(run_dir / PLAN, json.dumps(plan, indent=2) + "\n")
        except OSError as e:  # copytree's shutil.Error too (a full disk)
            shutil.rmtree(run_dir, ignore_errors=True)
            raise FileProblem(run_dir, f"cannot write the ensemble's folder ({e.strerror or e})") from None
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return _complete(run_dir, plan, jobs, on_member, on_work, t0)
    finally:
        lock.release(run_dir)


def resume(
    folder: Path,
    device: str | None = None,
    jobs: int = 1,
    on_member: MemberHooks | None = None,
    on_work: Any = None,
) -> TrainReport:
    """Go on with the stopped ensemble in `folder`: finish the stopped member, train the ones not started, combine."""
    t0 = time.perf_counter()
    with lock.claimed(folder):  # `CheckpointError` if another process is training it
        plan = read_plan(folder)
        if device is not None:
            plan["member_options"]["device"] = plan["options"]["device"] = device
        return _complete(folder, plan, jobs, on_member, on_work, t0)


def members_of(options: dict[str, Any]) -> int:
    """How many members `mnist train ensemble` with these options trains (`--members`, else the recipe's)."""
    given = options.get("members")
    return int(given) if given is not None else int(get_entry("ensemble").recipe["members"])


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
    """The plan of the ensemble in `folder`, checked. Raises `CheckpointError` if it is unreadable or malformed."""
    where = folder / PLAN
    try:
        plan = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{where}: not a readable ensemble plan ({e})") from None
    shape = {"members": list, "member_options": dict, "model_args": dict, "options": dict, "data": str}
    wrong = [k for k, t in shape.items() if not isinstance(plan, dict) or not isinstance(plan.get(k), t)]
    if wrong:
        raise CheckpointError(f"{where}: not an ensemble plan ({', '.join(wrong)} missing or of the wrong type)")
    for member in plan["members"]:
        ok = isinstance(member, dict) and isinstance(member.get("name"), str) and isinstance(member.get("model"), str)
        ok = ok and type(member.get("seed")) is int and isinstance(member.get("args", {}), dict)
        if not ok or not store.NAME_RE.fullmatch(member["name"]):
            raise CheckpointError(f"{where}: a member must be {{name, model, seed[, args]}}; got {str(member)[:80]}")
        try:
            family = get_entry(member["model"]).family
        except MnistError as e:
            raise CheckpointError(f"{where}: {e}") from None
        if family != "classify":
            raise CheckpointError(f"{where}: member {member['name']} is {a_model(family)}, not a classifier")
    if not plan["members"] or len({m["name"] for m in plan["members"]}) < len(plan["members"]):
        raise CheckpointError(f"{where}: its members must be one or more, each named once")
    try:  # the options as training will read them: wrong values fail here, not after the members trained
        for model in dict.fromkeys(m["model"] for m in plan["members"]):
            entry = get_entry(model)
            get_family(entry.family).configure(entry.recipe, plan["member_options"])
        own = plan["options"]
        EnsembleParams(**{k: v for k, v in own.items() if k in field_names(EnsembleParams)})
        TrainConfig(**{k: v for k, v in own.items() if k in field_names(TrainConfig)})
    except (MnistError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {e}") from None
    return plan  # type: ignore[no-any-return]


def member_args(member: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The model arguments a planned member trains with: its own entry's, or in a plan written before members had one,
    the plan's `--arg`s; either read as that plan's members were built (`registry.saved_args`: an argument the model
    gained after the plan was written takes the value that builds the model the plan meant)."""
    return saved_args(member["model"], member["args"] if "args" in member else plan["model_args"])


def _planned(params: EnsembleParams, config: TrainConfig) -> list[dict[str, Any]]:
    """The members to train: `--arch` names in turn, seeds `--seed`, `--seed + 1`, ..."""
    names = params.architectures()
    if config.seed + params.members - 1 >= 2**63:
        raise UsageError("--seed + --members (x --runs) must stay below 2**63")
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


def _sources(
    refs: list[str],
    given: dict[str, Any],
    model_args: dict[str, Any] | None,
    jobs: int,
    tensorboard: bool,
    params: EnsembleParams,
) -> tuple[list[dict[str, Any]], dict[str, Any], str | None, tuple[int, ...]]:
    """The finished classifier runs `--from` names, as members to copy in, the options they share (what they held
    out), the MNIST folder they were all trained on (if one, and it is there), and the digits they learnt. Raises
    `UsageError` for what cannot be done with them, before anything is written."""
    ignored = sorted(k for k in given if k not in ("seed", "device", "combine", "calibrate"))
    if ignored or model_args or jobs != 1 or tensorboard:
        flags = [*("--" + k.replace("_", "-") for k in ignored), *(["--arg"] if model_args else [])]
        flags += [*(["--jobs"] if jobs != 1 else []), *(["--tensorboard"] if tensorboard else [])]
        raise UsageError(
            f"{', '.join(flags)}: with --from the members are trained already; only --combine, --no-calibrate,"
            " --device and --name apply"
        )
    runs = [store.resolve(ref) for ref in refs]
    paths = [r.path.resolve() for r in runs]
    if len(set(paths)) < len(paths):
        raise UsageError("--from names the same run twice")
    for run in runs:
        if run.family != "classify":
            raise UsageError(f"--from {run.name}: an ensemble's members are classifiers; it is {a_model(run.family)}")
        if run.info.data.classes != runs[0].info.data.classes:
            raise UsageError(
                f"--from: {runs[0].name} and {run.name} were trained on different digits; members must share them"
            )
    configs = [r.info.config for r in runs]
    if params.combine == "select" and not (voting.shared_split(configs) and configs[0].get("val_split")):
        raise UsageError(
            "--combine select chooses weights on validation images every member held out; these runs did not hold out"
            " the same ones (train them with the same --val-split above 0 and the same --split-seed)"
        )
    width = max(2, len(str(len(runs))))
    members = [
        {"name": f"{i + 1:0{width}d}-{r.name}"[:100], "model": r.model, "seed": r.info.seed, "source": str(r.path)}
        for i, r in enumerate(runs)
    ]
    shared = {k: configs[0].get(k) for k in SHARED} if voting.shared_split(configs) else {}
    folders = {r.info.data.folder for r in runs}
    folder = next(iter(folders)) if len(folders) == 1 else None
    trained_on = folder if folder is not None and Path(folder).is_dir() else None
    return members, shared, trained_on, runs[0].info.data.classes


def _complete(
    run_dir: Path, plan: dict[str, Any], jobs: int, on_member: MemberHooks | None, on_work: Any, t0: float
) -> TrainReport:
    """Train the members not done yet, then combine, test and save the ensemble."""
    if not 1 <= jobs <= MAX_JOBS:
        raise UsageError(f"--jobs must be 1-{MAX_JOBS}")
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
    try:
        report = voting.combine(run_dir, plan, on_work, t0)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted while combining the members (all done and kept): resume with `mnist train --resume {run_dir.name}`"
        ) from None
    (run_dir / PLAN).unlink(missing_ok=True)
    return report


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
            member_args(member, plan),
            name=member["name"],
            data_dir=plan["data"],
            on_step=on_step,
            on_epoch=on_epoch,
            on_work=on_work,
            tensorboard=bool(plan.get("tensorboard")),
            root=root,
        )
    assert report is not None  # members train in one process each (an ensemble refuses torchrun)
    notify(on_work, f"done: test accuracy {100 * report.test_accuracy:.2f}% after {report.seconds:.1f} s of training")
    return {"name": member["name"], "model": member["model"], "seed": member["seed"], "accuracy": report.test_accuracy}
