"""The end of `mnist train ensemble`: finished members become one checkpoint.

Which images every member held out (their shared validation split, rebuilt from their options),
how they combine (equal weights, a majority vote, or weights chosen there by
protocols/combining.py), the ensemble's own temperature (fitted there too), its test, and the save.
Nothing here looks at the test set but the test itself.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mnistcli import store
from mnistcli.api import calibrating, onnxcache, training
from mnistcli.api.common import load_tensors, params_count
from mnistcli.config import TrainConfig, field_names
from mnistcli.data.tensors import TensorData
from mnistcli.engine.device import choose_device
from mnistcli.errors import UsageError
from mnistcli.families import Data, get_family
from mnistcli.families.base import trained_digits
from mnistcli.families.classify import ClassifyParams
from mnistcli.families.ensemble import EnsembleFamily, EnsembleParams, member_logits
from mnistcli.models.ensemble import Ensemble, combine_probabilities
from mnistcli.protocols import calibration
from mnistcli.protocols.combining import nll, select_weights
from mnistcli.registry import saved_args
from mnistcli.reports import TrainReport
from mnistcli.store.checkpoint import Checkpoint, DataSpec, ModelSpec, Results
from mnistcli.store.runs import MEMBERS, open_run

# What decides which images a run held out: runs that agree on all of these held out the same ones.
SPLIT_KEYS = ("split_seed", "val_split", "classes", "per_class", "calibrate")


def shared_split(configs: list[dict[str, Any]]) -> bool:
    """Whether runs with these training options (meta.json's `config`) held out the same images."""
    first = configs[0]
    return first.get("split_seed") is not None and all(
        all(c.get(k) == first.get(k) for k in SPLIT_KEYS) for c in configs
    )


def held_out(configs: list[dict[str, Any]], full_train: TensorData) -> TensorData | None:
    """The training images every member held out (validation split, else calibration images), rebuilt as
    api/training.py `_setup` drew them; None if their held-out images differ."""
    if not shared_split(configs):
        return None
    first = configs[0]
    config = TrainConfig(**{k: v for k, v in first.items() if k in field_names(TrainConfig)})
    splitter = torch.Generator().manual_seed(int(first["split_seed"]))
    kept, val = training.training_split(full_train, config, splitter)
    if val is not None:
        return val
    family = get_family("classify")(ClassifyParams(calibrate=bool(first.get("calibrate", True))), config)
    _, held, _ = calibrating.hold_out(family, kept, None, splitter)
    return held


def combine(run_dir: Path, plan: dict[str, Any], on_work: Any, t0: float) -> TrainReport:
    """Combine the finished members in `run_dir/members/` as `plan` says, test the ensemble and save it there."""
    options = plan["options"]
    params = EnsembleParams(**{k: v for k, v in options.items() if k in field_names(EnsembleParams)})
    config = TrainConfig(**{k: v for k, v in options.items() if k in field_names(TrainConfig)})
    family = EnsembleFamily(params, config)
    device = choose_device(config.device)
    runs = [open_run(run_dir / MEMBERS / m["name"]) for m in plan["members"]]
    members = [store.load(r, device) for r in runs]
    temperatures = [r.temperature for r in runs]
    folder = Path(plan["data"])
    full_train, full_test = load_tensors("train", folder, device), load_tensors("test", folder, device)
    held = held_out([r.info.config for r in runs], full_train)
    classes = runs[0].info.data.classes
    test = trained_digits(full_test, tuple(classes))  # DataError if none: never a measure of no image
    weights, selection = [1.0] * len(members), None
    if params.combine == "select":
        if held is None:  # refused before training (ensembling.py); a plan edited since may still ask for it
            raise UsageError("--combine select needs held-out images that every member held out")
        probe = Ensemble(members, "soft", weights, temperatures)
        probabilities = probe.calibrated(member_logits(probe, held))
        labels = held.labels.cpu()
        weights = select_weights(probabilities, labels)
        selection = {
            "weights": weights,
            "val_loss": nll(combine_probabilities(probabilities, "soft", torch.tensor(weights)), labels),
            "val_loss_equal_weights": nll(
                combine_probabilities(probabilities, "soft", torch.ones(len(members))), labels
            ),
            "images": len(held),
        }
    model = Ensemble(members, "vote" if params.combine == "vote" else "soft", weights, temperatures).to(device).eval()
    calibration_entry = _calibration(model, family, held)
    result = family.test(model, Data(full_train, held, test, full_train, full_test), on_work)
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
        "members": [{"name": r.model, "args": saved_args(r.model, r.info.model.args)} for r in runs],
        "combine": model.combine,
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
            "calibration": calibration_entry,
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
    onnxcache.write(run, model)  # the fast path's model (api/serving.py), when onnxruntime is there
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
        calibration=calibration_entry,
        members=entries,
        selection=selection,
    )


def _calibration(model: Ensemble, family: EnsembleFamily, held: TensorData | None) -> dict[str, Any]:
    """The ensemble's temperature, fitted on the members' shared held-out images as a single run's is on its own
    (api/calibrating.py), or T = 1 with the reason."""
    if not calibrating.wanted(family):
        why = "--no-calibrate"
    elif held is None:
        why = "its members held out different images (or none)"
    elif len(held) < calibration.MIN_IMAGES:
        why = f"fewer than {calibration.MIN_IMAGES} held-out images"
    else:
        return calibrating.fit(model, family, held, "validation")  # type: ignore[return-value]
    return {"method": "temperature", "temperature": 1.0, "fitted_on": None, "note": why}
