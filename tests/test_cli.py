"""The CLI as a user drives it: train, eval, predict, embed, models, checkpoints, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcli.cli import app
from tests.helpers import make_digits, save_png, write_mnist


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained_once(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny cnn trained once per module on the synthetic digits, through the CLI."""
    home = tmp_path_factory.mktemp("trained-home")
    env = {"MNISTCLI_HOME": str(home), "MNIST_DATA_DIR": str(synthetic_dir)}
    result = CliRunner().invoke(
        app, ["train", "cnn", "--epochs", "4", "--batch-size", "32", "--no-augment", "--lr", "0.01", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    return home / "runs", json.loads(result.stdout)


@pytest.fixture
def trained(trained_once: tuple[Path, dict], synthetic_env: Path, isolated_home: Path) -> dict:
    """The module's trained run, copied into this test's own home; returns its --json summary."""
    runs, summary = trained_once
    shutil.copytree(runs, isolated_home / "runs")
    return summary


@pytest.fixture
def pngs(tmp_path: Path) -> tuple[list[Path], np.ndarray]:
    images, labels = make_digits(30, seed=9)
    folder = tmp_path / "digits"
    folder.mkdir()
    return [save_png(img, folder / f"{i:03d}.png") for i, img in enumerate(images)], labels


def test_help_and_version_do_not_import_torch() -> None:
    code = "import sys; from mnistcli.cli import main; sys.argv=['mnist','--help']\ntry: main()\nexcept SystemExit: pass\nassert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout and "predict" in out.stdout
    version = subprocess.run([sys.executable, "-m", "mnistcli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("mnist ")


def test_models_lists_every_entry(runner: CliRunner) -> None:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in lines(result.stdout)}
    assert rows["linear"]["params"] == 7850 and rows["cnn"]["family"] == "classify"


def test_train_saves_a_self_describing_checkpoint(trained: dict, isolated_home: Path) -> None:
    run = isolated_home / "runs" / trained["run"]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["model"]["name"] == "cnn" and meta["config"]["epochs"] == 4
    assert len(meta["history"]) == 4 and meta["metrics"]["test_accuracy"] == trained["test_accuracy"]
    assert {"torch", "mnistcli", "python"} <= set(meta["versions"])
    assert trained["test_accuracy"] > 0.8  # synthetic digits are easy
    assert trained["seconds"] > 0


def test_eval_reports_accuracy_per_class_and_confusion(runner: CliRunner, trained: dict) -> None:
    result = runner.invoke(app, ["eval", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["checkpoint"] == trained["run"]
    assert report["accuracy"] == pytest.approx(trained["test_accuracy"])
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 100
    assert [row["total"] for row in report["per_class"]] == confusion.sum(axis=1).tolist()
    human = runner.invoke(app, ["eval", trained["run"]])
    assert human.exit_code == 0 and "per class" in human.stdout and "confusion" in human.stdout


def test_predict_json_and_partial_failure(
    runner: CliRunner, trained: dict, pngs: tuple[list[Path], np.ndarray], tmp_path: Path
) -> None:
    paths, labels = pngs
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    args = [str(paths[0]), str(bad), *map(str, paths[1:])]
    result = runner.invoke(app, ["predict", *args, "--json"])
    assert result.exit_code == 1
    rows = lines(result.stdout)
    assert [r["path"] for r in rows] == [str(p) for p in paths]  # the others still went through, in order
    assert all(len(r["probabilities"]) == 10 and abs(sum(r["probabilities"]) - 1) < 1e-3 for r in rows)
    accuracy = np.mean([r["digit"] == label for r, label in zip(rows, labels, strict=False)])
    assert accuracy > 0.8
    assert result.stderr.count("\n") == 1 and "not-an-image.png: not a readable image" in result.stderr
    assert "Traceback" not in result.output


def test_predict_reads_paths_from_stdin_and_folders(
    runner: CliRunner, trained: dict, pngs: tuple[list[Path], np.ndarray]
) -> None:
    paths, _ = pngs
    stdin = runner.invoke(app, ["predict", "-", "--json"], input="\n".join(map(str, paths[:5])) + "\n")
    assert stdin.exit_code == 0 and [r["path"] for r in lines(stdin.stdout)] == list(map(str, paths[:5]))
    folder = runner.invoke(app, ["predict", str(paths[0].parent)])
    assert folder.exit_code == 0
    rows = [line.split("\t") for line in folder.stdout.splitlines()]  # not a terminal: TSV
    assert len(rows) == len(paths) and all(len(r) == 3 and r[1].isdigit() for r in rows)


def test_embed_outputs(runner: CliRunner, trained: dict, pngs: tuple[list[Path], np.ndarray], tmp_path: Path) -> None:
    paths, _ = pngs
    js = runner.invoke(app, ["embed", *map(str, paths[:3]), "--json"])
    assert js.exit_code == 0
    rows = lines(js.stdout)
    assert [r["path"] for r in rows] == list(map(str, paths[:3])) and len(rows[0]["embedding"]) == 576
    out = tmp_path / "vectors.npy"
    npy = runner.invoke(app, ["embed", str(paths[0].parent), "--output", str(out)])
    assert npy.exit_code == 0 and np.load(out).shape == (len(paths), 576)
    np.testing.assert_allclose(np.load(out)[:3], np.array([r["embedding"] for r in rows]), atol=1e-5)
    csv = tmp_path / "vectors.csv"
    assert runner.invoke(app, ["embed", str(paths[0]), "--output", str(csv), "--format", "csv"]).exit_code == 0
    header, row = csv.read_text().splitlines()
    assert header.startswith("path,e0,") and row.startswith(str(paths[0]) + ",")


def test_checkpoints_list_and_remove(runner: CliRunner, trained: dict) -> None:
    listed = lines(runner.invoke(app, ["checkpoints", "--json"]).stdout)
    assert [r["name"] for r in listed if not r["bundled"]] == [trained["run"]]
    removed = runner.invoke(app, ["checkpoints", "rm", trained["run"]])
    assert removed.exit_code == 0 and "removed" in removed.stderr
    again = runner.invoke(app, ["checkpoints", "rm", trained["run"]])
    assert again.exit_code == 1 and "no run named" in again.stderr


def test_corrupt_checkpoint_is_one_line_error(runner: CliRunner, trained: dict, isolated_home: Path, pngs) -> None:
    (isolated_home / "runs" / trained["run"] / "model.safetensors").write_bytes(b"garbage")
    result = runner.invoke(app, ["predict", str(pngs[0][0])])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "corrupt weights" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_truncated_idx_file_is_one_line_error(runner: CliRunner, tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "data", n_train=20, n_test=10, gz=False)
    target = folder / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:-100])
    result = runner.invoke(app, ["train", "linear", "--epochs", "1", "--data-dir", str(folder)])
    assert result.exit_code == 1
    assert f"{target}: truncated" in result.stderr and result.stderr.count("\n") == 1


def test_mislabelled_idx_file_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "data", n_train=20, n_test=10, gz=False)
    (folder / "t10k-labels-idx1-ubyte").write_bytes((folder / "train-labels-idx1-ubyte").read_bytes())
    result = runner.invoke(app, ["train", "linear", "--epochs", "1", "--data-dir", str(folder)])
    assert result.exit_code == 1 and "10 images but" in result.stderr and "20 labels" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["train", "resnet9000"], 2, "unknown model 'resnet9000'"),
        (["train", "linear", "--classes", "a,b"], 2, "--classes"),
        (["train", "linear", "--val-split", "1.5"], 2, "--val-split"),
        (["eval", "no-such-run"], 1, "no checkpoint 'no-such-run'"),
    ],
)
def test_bad_usage(runner: CliRunner, synthetic_env: Path, args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, args, input="")
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_missing_data_without_network_says_what_to_do(runner: CliRunner) -> None:
    result = runner.invoke(app, ["train", "linear", "--epochs", "1"])
    assert result.exit_code == 1
    assert "could not download" in result.stderr and "--data-dir" in result.stderr


def test_early_stopping_uses_a_validation_split(runner: CliRunner, synthetic_env: Path) -> None:
    result = runner.invoke(
        app,
        ["train", "linear", "--epochs", "30", "--lr", "0.5", "--optimizer", "sgd", "--early-stopping", "2", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["config"]["val_split"] == 0.1
    assert all(h["val_accuracy"] is not None for h in report["history"])
    assert report["stopped_early"] == (report["epochs"] < 30)


def test_classes_and_per_class(runner: CliRunner, synthetic_env: Path, isolated_home: Path) -> None:
    result = runner.invoke(
        app, ["train", "linear", "--epochs", "1", "--classes", "0,1,2", "--per-class", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((isolated_home / "runs" / json.loads(result.stdout)["run"] / "meta.json").read_text())
    assert meta["data"]["train_images"] == 15 and meta["data"]["classes"] == [0, 1, 2]


def test_target_accuracy_stops_as_soon_as_it_is_reached(runner: CliRunner, synthetic_env: Path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            "cnn-fast",
            "--epochs",
            "20",
            "--batch-size",
            "30",
            "--target-accuracy",
            "0.5",
            "--check-every",
            "0.5",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    target = report["target"]
    assert target["reached"] and target["checked_on"] == "test" and target["accuracy"] >= 0.5
    assert report["stopped_early"] and report["epochs"] < 20
    assert target["epochs"] * 2 == int(target["epochs"] * 2)  # checked every half epoch
    assert report["test_accuracy"] == target["accuracy"]


def test_target_accuracy_not_reached_is_reported(runner: CliRunner, synthetic_env: Path) -> None:
    result = runner.invoke(
        app, ["train", "linear", "--epochs", "1", "--target-accuracy", "1.0", "--val-split", "0.2", "--json"]
    )
    assert result.exit_code == 0, result.output
    target = json.loads(result.stdout)["target"]
    assert target == {"target": 1.0, "checked_on": "validation", "reached": False}


def test_a_taken_or_invalid_name_fails_before_training(runner: CliRunner, trained: dict) -> None:
    for name, message, code in (
        (trained["run"], "already exists", 1),
        ("bad name", "invalid run name", 2),
        ("nl\n", "invalid run name", 2),
    ):
        result = runner.invoke(app, ["train", "linear", "--name", name])
        assert result.exit_code == code and message in result.stderr, result.output
        assert "epoch" not in result.stderr  # refused before any training


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["train", "cnn", "--arg", "width=-1"], 2, "model 'cnn': width must be a whole number of at least 1, not -1"),
        (["train", "mlp-deep", "--arg", "dropout=2"], 2, "model 'mlp-deep': bad arguments"),
        (["train", "linear", "--label-smoothing", "2"], 2, "--label-smoothing"),
        (["train", "linear", "--early-stopping", "2", "--val-split", "0"], 2, "--early-stopping needs held-out data"),
        (["checkpoints", "rm", "cnn-pretrained"], 1, "bundled with mnistcli and cannot be removed"),
        (["eval", "a", "-c", "b"], 2, "two checkpoints given"),
    ],
)
def test_more_bad_usage_is_one_line(
    runner: CliRunner, synthetic_env: Path, args: list[str], code: int, message: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_a_last_batch_of_one_image_trains(runner: CliRunner, synthetic_env: Path) -> None:
    # 300 training images in batches of 299 leave one: batch norm cannot take a batch of one.
    result = runner.invoke(app, ["train", "cnn-fast", "--batch-size", "299", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 1


def test_embed_output_problems_and_format_from_extension(
    runner: CliRunner, trained: dict, pngs: tuple[list[Path], np.ndarray], tmp_path: Path
) -> None:
    paths, _ = pngs
    bad = runner.invoke(app, ["embed", str(paths[0]), "--output", str(tmp_path)])
    assert bad.exit_code == 1 and "cannot write" in bad.stderr and "Traceback" not in bad.output
    odd = tmp_path / 'a, [b] "c".png'
    shutil.copy(paths[0], odd)
    out = tmp_path / "v.csv"
    assert runner.invoke(app, ["embed", str(odd), "--output", str(out)]).exit_code == 0
    import csv

    rows = list(csv.reader(out.open()))
    assert rows[1][0] == str(odd) and len(rows[1]) == 577
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_empty_inputs(runner: CliRunner, tmp_path: Path) -> None:
    quiet = runner.invoke(app, ["predict", "-", "--json"], input="")
    assert quiet.exit_code == 0 and quiet.stdout == ""
    empty = tmp_path / "empty"
    empty.mkdir()
    folder = runner.invoke(app, ["predict", str(empty)])
    assert folder.exit_code == 1 and "a folder with no image files in it" in folder.stderr


@pytest.mark.slow  # a subprocess that imports torch and predicts 300 images
def test_broken_pipe_is_not_a_failure(tmp_path: Path, pngs: tuple[list[Path], np.ndarray]) -> None:
    folder = pngs[0][0].parent
    for i in range(300):
        shutil.copy(pngs[0][0], folder / f"copy{i:03d}.png")
    cmd = f"set -o pipefail; {sys.executable} -m mnistcli predict {folder} --json | head -1"
    result = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digit"] in range(10)


def test_eval_judges_a_classes_run_on_its_own_digits(runner: CliRunner, synthetic_env: Path) -> None:
    trained = runner.invoke(app, "train linear --classes 0,1,2 --epochs 2 --batch-size 20 --name three --json".split())
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    report = json.loads(runner.invoke(app, ["eval", "three", "--json"]).stdout)
    assert report["accuracy"] == pytest.approx(summary["test_accuracy"])  # the same test images as training used
    assert report["total"] == 30 and report["classes"] == [0, 1, 2]
    assert report["per_class"][5] == {"digit": 5, "correct": 0, "total": 0, "accuracy": None}


def test_a_classes_run_whose_digits_the_test_images_lack(
    runner: CliRunner, synthetic_env: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """Test images holding none of a run's digits: training is refused before it starts, `mnist eval` says so in
    one line, and `mnist plot` draws the rest and notes it; never a traceback or an accuracy of 0 of 0 images."""
    from tests.helpers import write_idx

    no_nines = tmp_path / "no-nines"
    write_mnist(no_nines)
    images, labels = make_digits(100, 2)
    write_idx(no_nines / "t10k-images-idx3-ubyte.gz", images[labels != 9])
    write_idx(no_nines / "t10k-labels-idx1-ubyte.gz", labels[labels != 9])
    refused = runner.invoke(app, ["train", "linear", "--classes", "9", "--epochs", "1", "--data-dir", str(no_nines)])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert f"--classes 9: the test images in {no_nines} hold none of them" in refused.stderr
    trained = runner.invoke(app, "train linear --classes 8,9 --epochs 1 --batch-size 20 --name nines".split())
    assert trained.exit_code == 0, trained.output
    only_nine = runner.invoke(app, "train linear --classes 9 --epochs 1 --batch-size 20 --name nine".split())
    assert only_nine.exit_code == 0, only_nine.output
    again = runner.invoke(app, "train linear --classes 9 --epochs 1 --batch-size 20 --seed 1 --name nine-again".split())
    assert again.exit_code == 0, again.output
    evaluated = runner.invoke(app, ["eval", "nine", "--data-dir", str(no_nines)])
    assert evaluated.exit_code == 1 and "Traceback" not in evaluated.output
    assert (
        evaluated.stderr.strip()
        == f"error: the test images in {no_nines} hold no image of digits 9, those the run learnt"
    )
    partly = json.loads(runner.invoke(app, ["eval", "nines", "--data-dir", str(no_nines), "--json"]).stdout)
    assert partly["total"] == int((labels == 8).sum()) and partly["classes"] == [8, 9]  # its 8s are there
    plotted = runner.invoke(
        app, ["plot", "nine", "nines", "--data-dir", str(no_nines), "--output", str(tmp_path / "p")]
    )
    assert plotted.exit_code == 0, plotted.output
    assert "nine: the test images in" in plotted.stderr and "so no confusion matrix or mistakes" in plotted.stderr
    assert (tmp_path / "p" / "nines-confusion.png").exists() and not (tmp_path / "p" / "nine-confusion.png").exists()
    # An ensemble on those digits: refused before its run folder is begun, planned or from finished runs
    runs = isolated_home / "runs"
    before = sorted(p.name for p in runs.iterdir())
    planned = ["train", "ensemble", "--classes", "9", "--members", "2", "--epochs", "1", "--data-dir", str(no_nines)]
    refused = runner.invoke(app, planned)
    assert refused.exit_code == 2 and f"--classes 9: the test images in {no_nines} hold none of them" in refused.stderr
    joined = runner.invoke(app, ["train", "ensemble", "--from", "nine,nine-again", "--data-dir", str(no_nines)])
    assert joined.exit_code == 2 and f"--classes 9: the test images in {no_nines} hold none" in joined.stderr
    assert sorted(p.name for p in runs.iterdir()) == before
    # A family tested on every digit (an embedding's few-shot episodes) is not refused for it
    siamese = ["train", "siamese", "--classes", "9", "--epochs", "1", "--data-dir", str(no_nines), "--json"]
    assert "hold none of them" not in runner.invoke(app, siamese).output


def test_a_split_with_no_images_is_refused_when_read(runner: CliRunner, tmp_path: Path) -> None:
    from tests.helpers import write_idx

    empty = write_mnist(tmp_path / "empty-test")
    write_idx(empty / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    write_idx(empty / "t10k-labels-idx1-ubyte.gz", np.zeros((0,), np.uint8))
    for command in (["train", "linear", "--epochs", "1"], ["eval", "-c", "cnn-pretrained"]):
        result = runner.invoke(app, [*command, "--data-dir", str(empty)])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.stderr.strip() == f"error: {empty / 't10k-labels-idx1-ubyte.gz'}: no labels, an empty test split"


@pytest.mark.parametrize("command", ["eval", "export"])
def test_two_checkpoints_are_refused_before_torch_is_loaded(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    from mnistcli import api

    def load(*names: str) -> None:
        raise AssertionError("loaded torch for a usage error")

    monkeypatch.setattr(api, "load", load)
    extra = ["--output", "x.onnx"] if command == "export" else []
    result = runner.invoke(app, [command, "a", "--checkpoint", "b", *extra])
    assert result.exit_code == 2 and "two checkpoints given ('a' and --checkpoint 'b')" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["models"],
        ["checkpoints"],
        ["checkpoints", "rm", "nothing"],
        ["eval", "nothing"],
        ["export", "nothing", "--output", "x.onnx"],
        ["plot", "nothing"],
        ["train", "linear", "--jobs", "2"],
    ],
)
def test_torch_is_imported_under_the_start_up_spinner(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """A command loads the api modules it needs (which import torch, the slow part of its start) inside
    `render.starting()`, where a terminal user sees a spinner, not after it."""
    import contextlib
    from collections.abc import Iterator

    from mnistcli import api, render

    inside, loaded = [False], []

    @contextlib.contextmanager
    def starting(what: str = "") -> Iterator[None]:
        inside[0] = True
        yield
        inside[0] = False

    real = api.load
    monkeypatch.setattr(render, "starting", starting)
    monkeypatch.setattr(api, "load", lambda *names: (loaded.append((names, inside[0])), real(*names)))
    runner.invoke(app, command)
    assert loaded and all(under for _, under in loaded), loaded
