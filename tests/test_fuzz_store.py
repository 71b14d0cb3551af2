"""Hostile checkpoint descriptions (issue 17): a real run's meta.json, mutated anywhere by hypothesis.

Whatever a `meta.json` says, the store's reading and listing functions let nothing but a `MnistError`
(a `CheckpointError`, for a description) out, a bad run never hides a good one, and the commands that
read runs (`mnist checkpoints`, `eval`, `predict`) answer in one line instead of a traceback.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mnistcli import store
from mnistcli.cli import app
from mnistcli.errors import MnistError
from tests.helpers import save_png

# Words a description is made of, so that mutations often put a plausible thing in the wrong place.
WORDS = [
    "mnistcli-checkpoint/1",
    "mnistcli-checkpoint/2",
    "classify",
    "triplet",
    "ensemble",
    "cnn",
    "linear",
    "mlp",
    "accuracy",
    "temperature",
    "scale",
    "members",
    "name",
    "args",
    "width",
    "epoch",
    "train_loss",
    "seed",
    "lr",
    "classes",
    "2026-12-04T05:15:16+00:00",
    "[/]",
    "[bold]",
    "",
]
KEYS = ["calibration", "oneshot", "members", "selection", "metrics", "data", "history", "config", "model", "format"]
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([0, -1, 1, 9, 10, 2**31, 2**63, 2**64, 10**4000, -(10**4000)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(WORDS)
    | st.text(max_size=12)
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(WORDS + KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)


def _places(value: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value inside `value`, at every depth."""
    found: list[tuple[Any, Any]] = []
    todo = [value]
    while todo:
        container = todo.pop()
        keys = (
            list(container)
            if isinstance(container, dict)
            else range(len(container))
            if isinstance(container, list)
            else []
        )
        for key in keys:
            found.append((container, key))
            todo.append(container[key])
    return found


@st.composite
def mutated(draw: st.DrawFn, seeds: list[dict[str, Any]]) -> Any:
    """One of `seeds`, changed one to four times: a value anywhere replaced by any JSON value (one of the
    description's own, often), deleted, wrapped in lists or objects, or a field added."""
    meta: Any = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        places = _places(meta)
        if not places or draw(st.integers(0, 40)) == 0:
            return draw(values)  # the whole description
        container, key = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["replace", "replace", "borrow", "delete", "nest", "add"]))
        if action == "replace":
            container[key] = draw(values)
        elif action == "borrow":  # another field's value: right in one place, wrong in this one
            container[key] = copy.deepcopy(draw(st.sampled_from(places))[0])
        elif action == "delete":
            del container[key]
        elif action == "nest":
            for _ in range(draw(st.integers(1, 60))):
                container[key] = draw(st.sampled_from([[container[key]], {"x": container[key]}]))
        elif isinstance(container, dict):
            container[draw(st.sampled_from(KEYS + WORDS))] = draw(values)
    return meta


class Seeds(list[tuple[dict[str, Any], bytes]]):
    """(meta.json, model.safetensors) pairs, shown briefly in hypothesis's reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} real runs>"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path) -> Seeds:
    """(meta.json, model.safetensors) of a one-epoch linear run trained through the CLI on the synthetic MNIST, and
    of the bundled cnn (format 1, calibrated)."""
    home = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNISTCLI_HOME", str(home))
        patch.setenv("MNIST_DATA_DIR", str(synthetic_dir))
        patch.setenv("MNISTCLI_MIRRORS", "http://127.0.0.1:9/")
        result = CliRunner().invoke(app, ["train", "linear", "--epochs", "1", "--name", "real"])
    assert result.exit_code == 0, result.output
    bundled = store.bundled_runs()[0].path
    return Seeds(
        (json.loads((folder / "meta.json").read_text()), (folder / "model.safetensors").read_bytes())
        for folder in (home / "runs" / "real", bundled)
    )


def _store_with_a_bad_run(home: Path, seeds: Seeds, meta: Any) -> Path:
    """The store under `home`: the real run as `good`, and `bad`, whose meta.json is `meta`; returns the runs folder."""
    root = home / "runs"
    good, bad = root / "good", root / "bad"
    if not good.is_dir():
        good.mkdir(parents=True)
        (good / "meta.json").write_text(json.dumps({**seeds[0][0], "name": "good"}))
        (good / "model.safetensors").write_bytes(seeds[0][1])
    if bad.is_dir():
        shutil.rmtree(bad)
    bad.mkdir()
    weights = next((w for m, w in seeds if isinstance(meta, dict) and m["model"]["name"] == _model(meta)), seeds[0][1])
    (bad / "model.safetensors").write_bytes(weights)
    (bad / "meta.json").write_text(json.dumps(meta))  # NaN and Infinity as JSON's extension writes them
    return root


def _model(meta: dict[str, Any]) -> Any:
    model = meta.get("model")
    return model.get("name") if isinstance(model, dict) else None


def _use(run: store.Run) -> None:
    """Everything the commands read of a run's description."""
    info = run.info
    _ = (run.model, run.family, run.test_accuracy, run.temperature, run.sum_temperature, run.created, run.size_bytes)
    _ = (info.seed, info.oneshot_scale, info.calibration, list(info.data.classes), info.results.test_measure)
    _ = (info.to_json(), json.dumps(info.to_json()))


# function-scoped fixtures: each example rewrites the one bad run and leaves the rest of the store as it found it.
# The deadline (milliseconds) is a hang detector, not a timing threshold.
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
STORE = settings(max_examples=200, deadline=10_000, suppress_health_check=FIXTURES)
COMMANDS = settings(max_examples=40, deadline=10_000, suppress_health_check=FIXTURES)  # four commands an example


@STORE
@given(data=st.data())
def test_only_checkpoint_errors_get_out_of_the_store(data: st.DataObject, seeds: Seeds, isolated_home: Path) -> None:
    meta = data.draw(mutated([m for m, _ in seeds]), label="meta.json")
    root = _store_with_a_bad_run(isolated_home, seeds, meta)
    for read in (store.read_meta, store.read_checkpoint, store.runs.open_run):
        try:
            read(root / "bad")
        except MnistError:
            pass
    try:
        run = store.resolve("bad", root=root)
        _use(run)
        store.load(run)
    except MnistError:
        pass
    runs, broken = store.list_runs(root, include_bundled=True), store.broken_runs(root)
    for run in runs:
        _use(run)
    names, unreadable = [r.name for r in runs], [f.name for f, _ in broken]
    assert "good" in names and "good" not in unreadable
    assert ("bad" in names) != ("bad" in unreadable)  # listed, or reported: never silently gone
    assert store.interrupted_runs(root) == []
    try:
        store.resolve(None, root=root)  # the latest: `bad` if readable and newer, else an error naming it
    except MnistError:
        pass


@COMMANDS
@given(data=st.data())
def test_commands_never_show_a_traceback(
    data: st.DataObject,
    seeds: Seeds,
    isolated_home: Path,
    synthetic_env: Path,
    tmp_path: Path,
    runner: CliRunner,
) -> None:
    meta = data.draw(mutated([m for m, _ in seeds]), label="meta.json")
    _store_with_a_bad_run(isolated_home, seeds, meta)
    png = tmp_path / "x.png"
    if not png.exists():
        save_png(np.zeros((28, 28), dtype=np.uint8), png)
    listed = runner.invoke(app, ["checkpoints", "--json"])
    assert listed.exit_code == 0 and listed.exception is None, listed.output
    names = [json.loads(line)["name"] for line in listed.stdout.splitlines()]
    assert "good" in names and (("bad" in names) != ("bad: cannot be read" in listed.stderr)), listed.output
    table = runner.invoke(app, ["checkpoints"])
    assert table.exit_code == 0 and table.exception is None and "good" in table.stdout, table.output
    for command in (["eval", "bad", "--json"], ["predict", "-c", "bad", str(png), "--json"]):
        result = runner.invoke(app, command)
        assert result.exception is None or isinstance(result.exception, SystemExit), (command, result.output)
        assert "Traceback" not in result.output
        if result.exit_code != 0:
            assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, (command, result.stderr)
