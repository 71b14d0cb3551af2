"""The checkpoint store: naming, resolving, atomic saves, corrupt checkpoints, removal."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from mnistcli import store
from mnistcli.errors import CheckpointError, UsageError
from mnistcli.registry import create_model


def spec(model_name: str = "linear", **meta: object) -> store.Checkpoint:
    """A checkpoint description as meta.json would give it."""
    raw = {"format": store.FORMAT, "model": {"name": model_name, "args": {}, "family": "classify"}, **meta}
    return store.Checkpoint.from_json(raw, "test")


def save(root: Path, model_name: str = "linear", **meta: object) -> store.Run:
    return store.save(create_model(model_name), spec(model_name, **meta), root=root)


def test_names_are_unique_and_validated(tmp_path: Path) -> None:
    a, b = save(tmp_path), save(tmp_path)
    assert a.name != b.name and a.name.startswith("linear-")
    named = store.save(create_model("linear"), spec(), name="mine", root=tmp_path)
    assert named.name == "mine" and (tmp_path / "mine" / "model.safetensors").is_file()
    with pytest.raises(CheckpointError, match="already exists"):
        store.save(create_model("linear"), spec(), name="mine", root=tmp_path)
    with pytest.raises(UsageError, match="invalid run name"):
        store.save(create_model("linear"), spec(), name="../escape", root=tmp_path)


def test_resolve_by_run_model_path_and_latest(tmp_path: Path) -> None:
    first = save(tmp_path, "linear", created="2026-01-01T00:00:00+00:00")
    second = save(tmp_path, "mlp", created="2026-01-02T00:00:00+00:00")
    assert store.resolve(first.name, root=tmp_path).path == first.path
    assert store.resolve("linear", root=tmp_path).path == first.path
    assert store.resolve(str(second.path), root=tmp_path).path == second.path
    assert store.resolve(str(second.path / "model.safetensors"), root=tmp_path).path == second.path
    assert store.resolve(None, root=tmp_path).path == second.path
    with pytest.raises(CheckpointError, match="no checkpoint 'nothing'"):
        store.resolve("nothing", root=tmp_path)


def test_without_user_runs_the_bundled_cnn_is_used(tmp_path: Path) -> None:
    run = store.resolve(None, {"classify"}, root=tmp_path)
    assert run.bundled and run.model == "cnn"
    assert store.resolve("cnn", root=tmp_path).bundled
    mine = save(tmp_path, "cnn")
    assert store.resolve("cnn", root=tmp_path).path == mine.path  # the user's own run takes precedence
    assert store.resolve(None, root=tmp_path).path == mine.path


def test_an_interrupted_save_leaves_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(store.runs, "serialise", explode)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path)
    assert list(tmp_path.iterdir()) == []
    folder = store.begin("linear", "logged", root=tmp_path)  # a run that had started logging
    (folder / "log.jsonl").write_text("{}\n")
    with pytest.raises(KeyboardInterrupt):
        store.save(create_model("linear"), spec(), folder=folder)
    assert sorted(p.name for p in folder.iterdir()) == ["log.jsonl"]  # its log stays; no weights, no meta
    assert store.list_runs(tmp_path) == []
    assert store.list_runs(tmp_path) == []


def test_corrupt_weights_and_metadata_are_clear_errors(tmp_path: Path) -> None:
    run = save(tmp_path)
    (run.path / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="corrupt weights"):
        store.load(store.resolve(run.name, root=tmp_path))
    (run.path / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint metadata"):
        store.resolve(run.name, root=tmp_path)
    assert store.list_runs(tmp_path) == []  # a broken run is not listed as usable


def test_weights_that_do_not_fit_the_model(tmp_path: Path) -> None:
    run = save(tmp_path, "linear")
    meta = json.loads((run.path / "meta.json").read_text())
    meta["model"]["name"] = "mlp"
    (run.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="weights do not fit model 'mlp'"):
        store.load(store.resolve(run.name, root=tmp_path))


def test_weights_file_cannot_run_code(tmp_path: Path) -> None:
    """A pickle in place of the weights is refused, not executed."""
    run = save(tmp_path)
    torch.save({"x": torch.zeros(1)}, run.path / "model.safetensors")
    with pytest.raises(CheckpointError, match="corrupt weights"):
        store.load(store.resolve(run.name, root=tmp_path))


def test_remove(tmp_path: Path) -> None:
    run = save(tmp_path)
    assert store.remove(run.name, root=tmp_path).name == run.name
    assert not run.path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="no run named"):
        store.remove(run.name, root=tmp_path)


def test_saved_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """safetensors' own save_file makes 0600 files; a run's files follow the umask like any other."""
    mask = os.umask(0o022)
    try:
        run = save(tmp_path)
    finally:
        os.umask(mask)
    for name in ("model.safetensors", "meta.json"):
        assert stat.S_IMODE((run.path / name).stat().st_mode) == 0o644, name
