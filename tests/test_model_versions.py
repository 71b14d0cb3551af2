"""A model that gains an argument keeps reading the checkpoints written before it (registry `legacy`).

`cnn-fast` lost its stem's batch norm on 2026-12-04 (`stem_norm=False`, the new default), and its stem became a 6x6
unpadded convolution on 2026-12-05 (`stem_kernel=6, stem_pad=False`; a 5x5 one padded before). Its checkpoints from
before record none (before 2026-12-04) or only `stem_norm` (in between) and hold the stem they were trained with:
they must still load, evaluate, export, join ensembles and resume; new checkpoints record every such argument.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from mnistcli import registry, store
from mnistcli.cli import app
from mnistcli.store.checkpoint import ModelSpec

NEW = {"stem_norm": False, "stem_kernel": 6, "stem_pad": False}  # what a `cnn-fast` trained now records
BETWEEN = {"stem_norm": False, "stem_kernel": 5, "stem_pad": True}  # 2026-12-04 to 12-05 (recording only stem_norm)
OLDEST = {"stem_norm": True, "stem_kernel": 5, "stem_pad": True}  # before 2026-12-04 (recording nothing)


def stem_kernel(model: nn.Module) -> int:
    """The side of `cnn-fast`'s first convolution."""
    return int(model.body[0].kernel_size[0])


def stem_norms(model: nn.Module) -> int:
    """How many batch norms `cnn-fast`'s stem (its first three layers) holds."""
    return sum(isinstance(m, nn.BatchNorm2d) for m in list(model.body)[:3])


def save_old_cnn_fast(root: Path) -> tuple[store.Run, nn.Module]:
    """A `cnn-fast` checkpoint as mnistcli wrote it before 2026-12-04: a 5x5 padded stem, normalised, no arguments
    recorded."""
    torch.manual_seed(0)
    model = registry.create_model("cnn-fast", **OLDEST)
    model.train()
    with torch.no_grad():  # running statistics of their own, so the normalisation is not the identity
        model(torch.rand(64, 1, 28, 28))
    model.eval()
    run = store.save(model, store.Checkpoint(ModelSpec("cnn-fast", {}, "classify")), store.begin("cnn-fast", root=root))
    return run, model


def test_recorded_and_saved_args() -> None:
    assert registry.recorded_args("cnn-fast", {}) == NEW
    assert registry.recorded_args("cnn-fast", {"stem_norm": True, "width": 8}) == {**NEW, "stem_norm": True, "width": 8}
    assert registry.saved_args("cnn-fast", {}) == OLDEST
    assert registry.saved_args("cnn-fast", {"stem_norm": False}) == BETWEEN
    assert registry.saved_args("cnn-fast", NEW) == NEW
    assert registry.recorded_args("cnn", {"width": 8}) == {"width": 8}  # no legacy arguments: as given
    assert registry.saved_args("cnn", {}) == {}
    assert registry.saved_args("no-such-model", {"x": 1}) == {"x": 1}  # left for the rebuild to refuse


def test_new_cnn_fast_has_no_stem_norm_and_the_old_one_has() -> None:
    assert stem_norms(registry.create_model("cnn-fast")) == 0
    assert stem_norms(registry.create_model("cnn-fast", stem_norm=True)) == 1


def test_the_stems_map_and_what_it_sees() -> None:
    """The new stem's map is 12 x 12, the padded one's 14 x 14; both end in the same 3 x 3 x 48 features. The new one
    sees every pixel: a change to the last row or column moves its features (the padded 5x5 one sees them too)."""
    x = torch.rand(2, 1, 28, 28)
    for args, side in ((NEW, 12), (BETWEEN, 14)):
        model = registry.create_model("cnn-fast", **args).eval()
        assert model.body[1](model.body[0](x)).shape == (2, 12, side, side)
        assert model.features(x).shape == (2, 128)
        for corner in ((27, 27), (0, 0), (27, 0)):
            moved = x.clone()
            moved[:, :, corner[0], corner[1]] += 5
            assert not torch.equal(model.body[0](moved), model.body[0](x)), (args, corner)


def test_a_stem_that_does_not_fit_is_refused(runner: CliRunner) -> None:
    """Unpadded, a kernel above 6 leaves too small a map; padded, any kernel keeps 14 x 14, so the size is bounded
    (a padded 1000 was once taken and trained for hours, deaf to Ctrl-C inside one convolution)."""
    for kernel, pad, fits in ((6, False, True), (1, False, True), (7, False, False), (7, True, True), (8, True, False)):
        if fits:
            registry.create_model("cnn-fast", stem_kernel=kernel, stem_pad=pad)
            continue
        with pytest.raises(registry.ModelError) as refused:
            registry.create_model("cnn-fast", stem_kernel=kernel, stem_pad=pad)
        given = f"{kernel} {'with' if pad else 'without'} padding"
        assert f"(stem_kernel must be 1 to 7 with stem_pad=true, 1 to 6 without; not {given});" in str(refused.value)
    result = runner.invoke(app, ["train", "cnn-fast", "--arg", "stem_kernel=1000", "--arg", "stem_pad=true"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "stem_kernel must be 1 to 7 with stem_pad=true, 1 to 6 without; not 1000 with padding" in result.stderr


def test_a_checkpoint_from_between_the_changes_keeps_its_padded_stem(tmp_path: Path) -> None:
    """A `cnn-fast` checkpoint of 2026-12-04/05 records `stem_norm` only: read with the 5x5 padded stem it holds."""
    torch.manual_seed(0)
    model = registry.create_model("cnn-fast", **BETWEEN).eval()
    spec = ModelSpec("cnn-fast", {"stem_norm": False}, "classify")
    run = store.save(model, store.Checkpoint(spec), store.begin("cnn-fast", root=tmp_path))
    loaded = store.load(run)
    assert (stem_kernel(loaded), stem_norms(loaded)) == (5, 0)
    x = torch.rand(8, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_an_old_cnn_fast_checkpoint_loads_and_computes_as_before(tmp_path: Path) -> None:
    run, model = save_old_cnn_fast(tmp_path)
    loaded = store.load(run)
    assert (stem_kernel(loaded), stem_norms(loaded)) == (5, 1)
    x = torch.rand(8, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_an_old_cnn_fast_checkpoint_through_the_cli(
    runner: CliRunner, synthetic_env: Path, isolated_home: Path, tmp_path: Path
) -> None:
    save_old_cnn_fast(isolated_home / "runs")
    evaluated = runner.invoke(app, ["eval", "cnn-fast", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert 0.0 <= json.loads(evaluated.stdout)["accuracy"] <= 1.0
    exported = runner.invoke(app, ["export", "cnn-fast", "--output", str(tmp_path / "old.onnx")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "old.onnx").stat().st_size > 0


def test_training_records_the_new_argument(runner: CliRunner, synthetic_env: Path, isolated_home: Path) -> None:
    for extra, expected in (([], False), (["--arg", "stem_norm=true"], True)):
        result = runner.invoke(app, ["train", "cnn-fast", "--epochs", "1", "--json", *extra])
        assert result.exit_code == 0, result.output
        run_dir = Path(json.loads(result.stdout)["path"])
        meta = json.loads((run_dir / "meta.json").read_text())
        assert meta["model"]["args"] == {**NEW, "stem_norm": expected}
        loaded = store.load(store.resolve(run_dir.name))
        assert (stem_kernel(loaded), stem_norms(loaded)) == (6, int(expected))


def test_an_ensemble_recorded_before_keeps_its_members_stems() -> None:
    old = registry.create_model("ensemble", members=[{"name": "cnn-fast", "args": {}}])
    between = registry.create_model("ensemble", members=[{"name": "cnn-fast", "args": {"stem_norm": False}}])
    new = registry.create_model("ensemble", members=[{"name": "cnn-fast", "args": NEW}])
    assert [(stem_kernel(m), stem_norms(m)) for m in old.members] == [(5, 1)]
    assert [(stem_kernel(m), stem_norms(m)) for m in between.members] == [(5, 0)]
    assert [(stem_kernel(m), stem_norms(m)) for m in new.members] == [(6, 0)]


def test_a_run_interrupted_before_resumes_with_its_own_stem(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot of a run begun before the change records no `stem_norm` (and holds a normalised stem): it resumes
    with that stem, and the finished run records it."""
    from mnistcli import paths
    from mnistcli.render import progress
    from mnistcli.store import snapshot

    real = progress.TrainProgress.epoch

    def stop(self: progress.TrainProgress, info: object) -> None:
        real(self, info)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    old = ["--arg", "stem_norm=true", "--arg", "stem_kernel=5", "--arg", "stem_pad=true"]  # the model it held
    args = ["train", "cnn-fast", "--epochs", "2", *old, "--name", "cut"]
    with monkeypatch.context() as patch:
        patch.setattr(progress.TrainProgress, "epoch", stop)
        assert runner.invoke(app, args).exit_code == 130  # Ctrl-C after the first epoch
    folder = paths.runs_dir() / "cut"
    state, run = snapshot.read(folder)
    assert run["args"] == OLDEST
    snapshot.write(folder, state, {**run, "args": {}})  # as written before the changes
    resumed = runner.invoke(app, ["train", "--resume", "cut", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((folder / "meta.json").read_text())["model"]["args"] == OLDEST
    loaded = store.load(store.resolve("cut"))
    assert (stem_kernel(loaded), stem_norms(loaded)) == (5, 1)


def test_an_old_runs_export_names_the_model_it_holds(isolated_home: Path) -> None:
    from mnistcli.api import exporting
    from mnistcli.families import get_family

    run, _ = save_old_cnn_fast(isolated_home / "runs")
    spec = get_family("classify").exported
    assert spec is not None
    assert exporting.metadata(store.resolve(run.name), spec)["model_args"] == OLDEST


def test_an_old_ensembles_members_are_described_as_built(isolated_home: Path) -> None:
    """`saved_args` of an ensemble reads each member's arguments as that member was built: what an export's
    metadata names."""
    recorded = {"members": [{"name": "cnn-fast", "args": {}}, {"name": "cnn-fast", "args": {"stem_norm": False}}]}
    assert registry.saved_args("ensemble", recorded)["members"] == [
        {"name": "cnn-fast", "args": OLDEST},
        {"name": "cnn-fast", "args": BETWEEN},
    ]
    odd = {"members": [{"name": "cnn-fast"}, "not a member"]}  # left for the builder to read or refuse
    assert registry.saved_args("ensemble", odd)["members"] == [{"name": "cnn-fast", "args": OLDEST}, "not a member"]


def test_an_ensembles_plan_records_each_members_arguments_and_an_old_plan_keeps_its_own() -> None:
    from mnistcli.api.ensembling import member_args

    plan = {"model_args": {}}
    assert member_args({"name": "01-cnn-fast", "model": "cnn-fast", "seed": 0}, plan) == OLDEST
    between = {"name": "01-cnn-fast", "model": "cnn-fast", "seed": 0, "args": {"stem_norm": False}}
    assert member_args(between, plan) == BETWEEN
    new = {"name": "01-cnn-fast", "model": "cnn-fast", "seed": 0, "args": NEW}
    assert member_args(new, plan) == NEW
    assert member_args({"name": "01-cnn", "model": "cnn", "seed": 0}, {"model_args": {"width": 4}}) == {"width": 4}


def test_an_ensemble_of_cnn_fast_trains_its_members_as_they_are_now(runner: CliRunner, synthetic_env: Path) -> None:
    args = ["train", "ensemble", "--arch", "cnn-fast", "--members", "2", "--epochs", "1", "--val-split", "0.2"]
    result = runner.invoke(app, [*args, "--batch-size", "50", "--json"])
    assert result.exit_code == 0, result.output
    folder = Path(json.loads(result.stdout)["path"])
    meta = json.loads((folder / "meta.json").read_text())
    assert [m["args"] for m in meta["model"]["args"]["members"]] == [NEW] * 2
    assert [(stem_kernel(m), stem_norms(m)) for m in store.load(store.resolve(folder.name)).members] == [(6, 0)] * 2


def test_a_switchs_default_is_spelled_as_arg_takes_it(runner: CliRunner) -> None:
    result = runner.invoke(app, ["train", "cnn-fast", "--arg", "stem_norm=maybe"])
    assert result.exit_code != 0 and "stem_norm=false" in result.stderr and "False" not in result.stderr
