"""The checkpoint store: naming, resolving, atomic saves, corrupt checkpoints, removal."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

from mnistcli import store
from mnistcli.cli import app
from mnistcli.errors import CheckpointError, UsageError
from mnistcli.registry import create_model, list_models, recorded_args
from tests.helpers import save_png


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

    monkeypatch.setattr(store.weights, "serialise", explode)
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


# --- A checkpoint's description is never trusted (issue 17, findings 4 and 5) ---------------------------------


def _good_and_bad(home: Path) -> tuple[store.Run, Path]:
    """A readable run `good` and a copy `bad` of it in the store under `home`; returns `good` and bad's folder."""
    good = store.save(create_model("linear"), spec(), name="good", root=home / "runs")
    bad = store.save(create_model("linear"), spec(), name="bad", root=home / "runs").path
    return good, bad


def _one_line_error(result: Result, *words: str) -> None:
    """A one-line `error: ...` naming `words`, exit status 1, and no traceback."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output and all(w in result.stderr for w in words), result.stderr


def _check_refused_everywhere(runner: CliRunner, tmp_path: Path, *words: str) -> None:
    """`mnist checkpoints` lists `good` and reports `bad` as unreadable; eval, predict and rm of `bad` are one line."""
    listed = runner.invoke(app, ["checkpoints", "--json"])
    assert listed.exit_code == 0 and listed.exception is None, listed.output
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == ["cnn-pretrained", "good"]
    assert "bad: cannot be read" in listed.stderr and all(w in listed.stderr for w in words), listed.stderr
    _one_line_error(runner.invoke(app, ["eval", "bad"]), "bad", *words)
    png = save_png(np.zeros((28, 28), dtype=np.uint8), tmp_path / "x.png")
    _one_line_error(runner.invoke(app, ["predict", "-c", "bad", str(png)]), "bad", *words)
    removed = runner.invoke(app, ["checkpoints", "rm", "bad"])
    assert removed.exit_code == 0 and "removed bad" in removed.stderr, removed.output
    assert [r.name for r in store.list_runs()] == ["good"] and store.broken_runs() == []


def _edit(meta: dict, path: str, value: object) -> dict:
    """`meta` with the field at dotted `path` set to `value` (or deleted, for `DELETE`)."""
    *parents, last = path.split(".")
    inner = meta
    for key in parents:
        inner = inner[key]
    if value is DELETE:
        del inner[last]
    else:
        inner[last] = value
    return meta


DELETE = object()


class Hung(BaseException):
    """Raised by `no_hang`: a BaseException, so that no `except OSError` or `except Exception` on the way swallows it."""


@contextlib.contextmanager
def no_hang(seconds: int = 60) -> Iterator[None]:
    """Fail with `Hung` if the block takes `seconds` (a hang detector, not a timing threshold: the work takes a
    fraction of a second; a FIFO opened for reading waits for a writer for ever)."""

    def hung(signum: int, frame: object) -> None:
        raise Hung(f"still waiting after {seconds} s")

    before = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


WRONG_FIELDS = [
    ("metrics", "oops", "'metrics'"),
    ("data.classes", [42, "x"], "'data.classes'"),
    ("data", [1, 2], "'data'"),
    ("data.train_images", float("inf"), "'data.train_images'"),
    ("data.val_images", -3, "'data.val_images'"),
    ("history", 5, "'history'"),
    ("history", [{"epoch": "one"}], "'history[0].epoch'"),
    ("seconds", "x", "'seconds'"),
    ("seconds", float("nan"), "'seconds'"),
    ("metrics.test_accuracy", "x", "'metrics.test_accuracy'"),
    ("metrics.test_accuracy", 7.5, "'metrics.test_accuracy'"),
    ("metrics.stopped_early", "no", "'metrics.stopped_early'"),
    ("metrics.target", [1], "'metrics.target'"),
    ("model.name", 5, "'model.name'"),
    ("model.name", DELETE, "'model.name'"),
    ("model.args", [], "'model.args'"),
    ("model.args", {"name": "cnn"}, "'model.args'"),  # was a TypeError: create_model's own `name`
    ("model.family", ["classify"], "'model.family'"),
    ("model.family", "astrology", "astrology"),
    ("model.params", "many", "'model.params'"),
    ("config", 3, "'config'"),
    ("config.seed", "x", "'config.seed'"),
    ("config.lr", float("-inf"), "'config.lr'"),
    ("config.epochs", 0, "'config'"),
    ("config.label_smoothing", "x", "'config.label_smoothing'"),  # the family's own option
    ("created", 20261204, "'created'"),
    ("created", "[/]", "'created'"),  # no markup reaches the table
    ("versions", {"torch": 2}, "'versions.torch'"),
    ("processes", 10**4000, "'processes'"),
    ("calibration", {"temperature": 1.0, "sum": [1]}, "'calibration'"),
    ("oneshot", {"scale": "big"}, "'oneshot.scale'"),
]


@pytest.mark.parametrize(("field", "value", "named"), WRONG_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v, _ in WRONG_FIELDS])
def test_a_field_of_the_wrong_type_or_range_is_one_line_naming_it(
    runner: CliRunner, isolated_home: Path, tmp_path: Path, field: str, value: object, named: str
) -> None:
    _, bad = _good_and_bad(isolated_home)
    meta = _edit(json.loads((bad / "meta.json").read_text()), field, value)
    (bad / "meta.json").write_text(json.dumps(meta))
    _check_refused_everywhere(runner, tmp_path, named)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[" * 100_000, "corrupt checkpoint metadata"),  # was a RecursionError traceback
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "corrupt checkpoint metadata"),
        (f'{{"format": "{store.FORMAT}", "model": {{"name": "linear"}}, "x": {"[" * 40 + "]" * 40}}}', "levels deep"),
        ("[1, 2]", "not a mnistcli-checkpoint/2 checkpoint"),
        ('"text"', "not a mnistcli-checkpoint/2 checkpoint"),
        ("1" * 5000, "corrupt checkpoint metadata"),  # more digits than Python converts
        ("\xff\xfe", "corrupt checkpoint metadata"),
    ],
    ids=["array-nesting", "object-nesting", "too-deep", "list", "text", "huge-int", "latin-1"],
)
def test_unreadable_json_is_one_line(
    runner: CliRunner, isolated_home: Path, tmp_path: Path, text: str, words: str
) -> None:
    _, bad = _good_and_bad(isolated_home)
    (bad / "meta.json").write_bytes(text.encode("latin-1"))
    _check_refused_everywhere(runner, tmp_path, words)


def test_nan_and_infinity_literals_are_refused_where_a_number_must_be_finite(
    runner: CliRunner, isolated_home: Path, tmp_path: Path
) -> None:
    _, bad = _good_and_bad(isolated_home)
    text = (bad / "meta.json").read_text().replace('"processes": 1', '"processes": NaN')
    (bad / "meta.json").write_text(text.replace('"val_images": 0', '"val_images": Infinity'))
    _check_refused_everywhere(runner, tmp_path, "'data.val_images'")


def test_a_diverged_run_with_nan_measurements_stays_readable(isolated_home: Path) -> None:
    """NaN is what a diverged run really measures (a loss, a bag AUC of one class): it is not a corrupt file."""
    history = [{"epoch": 1, "train_loss": float("nan"), "train_accuracy": 0.1, "lr": 0.1, "seconds": 1.0}]
    run = save(isolated_home / "runs", history=history, metrics={"test_accuracy": float("nan"), "test_loss": None})
    text = (run.path / "meta.json").read_text()
    assert "NaN" not in text and '"train_loss": null' in text  # strict JSON, which jq and browsers read too
    json.loads(text, parse_constant=lambda c: pytest.fail(f"meta.json holds {c}"))
    info = store.read_checkpoint(run.path)
    assert math.isnan(info.history[0]["train_loss"]) and info.results.test_accuracy is None
    # A description written before this (NaN literals) still reads.
    (run.path / "meta.json").write_text(text.replace('"train_loss": null', '"train_loss": NaN'))
    assert math.isnan(store.read_checkpoint(run.path).history[0]["train_loss"])


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("huge", "too large"),
        ("fifo", "not a regular file"),
        ("directory", "not a regular file"),
        ("dangling link", "no meta.json"),
    ],
)
def test_a_meta_json_that_is_no_small_file_neither_hangs_nor_fills_memory(
    runner: CliRunner, isolated_home: Path, tmp_path: Path, kind: str, words: str
) -> None:
    _, bad = _good_and_bad(isolated_home)
    meta = bad / "meta.json"
    meta.unlink()
    if kind == "huge":
        with meta.open("wb") as f:
            f.truncate(64 * 2**20)  # sparse: 64 MiB of nothing, four times the most that is read
    elif kind == "fifo":
        os.mkfifo(meta)  # opening it to read would wait for a writer for ever
    elif kind == "directory":
        meta.mkdir()
    else:
        meta.symlink_to(tmp_path / "nowhere")
    with no_hang():
        _check_refused_everywhere(runner, tmp_path, words)


def test_absurd_model_arguments_are_one_line(runner: CliRunner, isolated_home: Path, tmp_path: Path) -> None:
    """cnn at width 2000 would be 1.3 GiB of weights, at width 10**9 more than any machine has: refused in one line
    (by the registry's size limit or by the weights file's header), never allocated."""
    _, bad = _good_and_bad(isolated_home)
    png = save_png(np.zeros((28, 28), dtype=np.uint8), tmp_path / "x.png")
    for width in (1200, 2000, 10**9):
        meta = _edit(json.loads((bad / "meta.json").read_text()), "model.name", "cnn")
        (bad / "meta.json").write_text(json.dumps(_edit(meta, "model.args", {"width": width})))
        for command in (["eval", "bad"], ["predict", "-c", "bad", str(png)]):
            result = runner.invoke(app, command)
            _one_line_error(result, "bad", "'cnn'")
            assert "weights do not fit" in result.stderr or "cannot rebuild its model" in result.stderr


def test_weights_that_do_not_fit_are_refused_before_the_model_is_allocated(isolated_home: Path) -> None:
    """Peak resident memory, in a fresh process, while loading a run that says cnn at width 1200 (130 million
    parameters: 0.5 GiB, within the registry's limit) but holds a linear model's weights: the refusal comes from
    the weights file's header and a model built on the meta device, so memory grows by far less than the model."""
    _, bad = _good_and_bad(isolated_home)
    meta = _edit(json.loads((bad / "meta.json").read_text()), "model.name", "cnn")
    (bad / "meta.json").write_text(json.dumps(_edit(meta, "model.args", {"width": 1200})))
    probe = """if True:
        import json, resource
        from mnistcli import store
        from mnistcli.errors import CheckpointError
        store.load(store.resolve("good"))  # torch and the loading code in memory first
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            store.load(store.resolve("bad"))
            error = ""
        except CheckpointError as e:
            error = str(e)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({"grown_kib": grown, "error": error}))
    """
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=600)
    result = json.loads(done.stdout.splitlines()[-1])
    assert "weights do not fit model 'cnn'" in result["error"], result
    assert result["grown_kib"] < 100 * 1024, result  # the model's parameters alone are 500 MiB


def test_every_registered_model_still_loads_through_the_shape_check(tmp_path: Path) -> None:
    for entry in list_models():
        model = {"name": entry.name, "args": recorded_args(entry.name, {}), "family": entry.family}
        run = store.save(create_model(entry.name), spec(entry.name, model=model), root=tmp_path)
        assert isinstance(store.load(run), torch.nn.Module), entry.name


def test_weights_of_the_wrong_shape_are_named(tmp_path: Path) -> None:
    run = save(tmp_path, "mlp")
    meta = json.loads((run.path / "meta.json").read_text())
    meta["model"]["args"] = {"hidden": 12}
    (run.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointError, match=r"weights do not fit model 'mlp' \('body.1.weight' is 490x784 in the file"
    ):
        store.load(store.resolve(run.name, root=tmp_path))


def test_a_reference_too_long_for_the_file_system_is_one_line(runner: CliRunner) -> None:
    _one_line_error(runner.invoke(app, ["eval", "a" * 5000]), "no checkpoint")
    _one_line_error(runner.invoke(app, ["eval", "a/" * 3000]), "no checkpoint")


def test_a_run_is_claimed_while_it_trains_and_refused_to_others(tmp_path: Path) -> None:
    import re

    from mnistcli.store import lock

    folder = store.begin("linear", "busy", root=tmp_path)  # as a training claims its run
    in_use = f"run 'busy' is in use by a training (pid {os.getpid()})"
    assert lock.holder(folder) == f"a training (pid {os.getpid()})"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".busy.lock", "busy"]  # beside the run, not in it
    assert store.list_runs(tmp_path) == [] and store.interrupted_runs(tmp_path) == []
    with pytest.raises(CheckpointError, match=f"^{re.escape(in_use)}$"):
        store.check_new_name("busy", tmp_path)
    with pytest.raises(CheckpointError, match=f"^{re.escape(in_use)}$"):
        store.begin("linear", "busy", root=tmp_path)
    with pytest.raises(CheckpointError, match=f"^{re.escape(in_use)}$"):
        store.remove("busy", root=tmp_path)
    with pytest.raises(CheckpointError, match=f"^{re.escape(in_use)}$"):
        lock.claim(folder)  # a second claim, even from the same process
    lock.release(folder)
    assert lock.holder(folder) is None and not lock.lock_file(folder).exists()
    with pytest.raises(CheckpointError, match="interrupted before saving"):
        store.check_new_name("busy", tmp_path)  # free, and what it is again
    store.remove("busy", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_left_by_a_killed_process_claims_nothing(tmp_path: Path) -> None:
    from mnistcli.store import lock

    folder = tmp_path / "left"
    folder.mkdir()
    lock.lock_file(folder).write_text("1 a training\n")  # its process is gone, and the kernel dropped its lock
    assert lock.holder(folder) is None
    with lock.claimed(folder):
        assert lock.holder(folder) == f"a training (pid {os.getpid()})"
    assert not lock.lock_file(folder).exists()


def test_a_default_name_claimed_but_not_yet_made_is_taken(tmp_path: Path) -> None:
    from mnistcli.store import lock

    with lock.claimed(tmp_path / "linear-1"):  # another run claimed this name and has not made its folder yet
        assert store.unique_name("linear-1", tmp_path) == "linear-1.2"
    assert store.unique_name("linear-1", tmp_path) == "linear-1"


@pytest.mark.parametrize("kind", ["forged", "fifo"])
def test_a_stopped_run_with_an_unreadable_snapshot_is_still_listed(
    runner: CliRunner, isolated_home: Path, kind: str
) -> None:
    """`mnist checkpoints` peeks at a stopped run's resume snapshot: a forged header was an AttributeError
    traceback, a FIFO in its place made the listing wait for ever."""
    _good_and_bad(isolated_home)
    snapshot = isolated_home / "runs" / "stopped" / "resume.safetensors"
    snapshot.parent.mkdir()
    if kind == "fifo":
        os.mkfifo(snapshot)
    else:
        header = json.dumps({"__metadata__": {"snapshot": json.dumps({"run": {"options": "x"}, "state": {}})}})
        snapshot.write_bytes(len(header).to_bytes(8, "little") + header.encode())
    with no_hang():
        listed = runner.invoke(app, ["checkpoints"])
    assert listed.exit_code == 0 and listed.exception is None, listed.output
    assert "good" in listed.stdout and "stopped: interrupted before saving" in listed.stderr
