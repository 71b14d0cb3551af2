"""`mnist export`: ONNX and TorchScript files that answer as `mnist predict` and the torch model do, and refusals."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mnistcli import store
from mnistcli.api import exporting
from mnistcli.cli import app
from mnistcli.data.images import load_images
from mnistcli.families import families_where, get_family
from tests.helpers import make_digits, save_png

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # a user's load
TINY = ["--epochs", "1", "--per-class", "5", "--batch-size", "25", "--name", "run"]
META_KEYS = {"run", "model", "family", "test_accuracy", "mnistcli_version", "preprocessing", "inputs", "outputs"}


def train(runner: CliRunner, model: str, *args: str) -> None:
    result = runner.invoke(app, ["train", model, *TINY, *args])
    assert result.exit_code == 0, result.output


def export(runner: CliRunner, path: Path, fmt: str) -> dict:
    result = runner.invoke(app, ["export", "run", "--format", fmt, "-o", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["path"] == str(path) and path.stat().st_size == report["size_bytes"]
    assert report["parity"]["data"] == "MNIST test images" and report["parity"]["compared"] > 0
    assert META_KEYS <= set(report["metadata"])
    return report


def run_file(path: Path, fmt: str, *inputs: np.ndarray) -> tuple[list[np.ndarray], dict]:
    """The exported file's outputs on `inputs`, and its metadata, read back as a user would."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        meta = dict(session.get_modelmeta().custom_metadata_map)
        return session.run(None, dict(zip(names, inputs, strict=True))), {k: from_text(v) for k, v in meta.items()}
    extra = {"meta.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    with torch.no_grad():
        out = loaded(*(torch.from_numpy(x) for x in inputs))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))], json.loads(extra["meta.json"])


def from_text(value: str) -> object:
    """An ONNX metadata value: JSON, or text as it is."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def user_images(tmp_path: Path, n: int = 3) -> tuple[list[str], np.ndarray]:
    """PNG files of digits, and the float (N, 1, 28, 28) arrays `mnist predict` makes of them."""
    digits, _ = make_digits(n, seed=1)
    paths = [str(save_png(d, tmp_path / f"{i}.png")) for i, d in enumerate(digits)]
    arrays = np.stack([a for _, a in load_images(paths)]).astype(np.float32)[:, None]
    return paths, arrays


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("model,args", [("linear", []), ("cnn", ["--arg", "width=4"])])
def test_a_classifier_file_gives_mnist_predicts_probabilities(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path, model: str, args: list[str], fmt: str
) -> None:
    train(runner, model, *args)
    out = tmp_path / f"model.{fmt}"
    report = export(runner, out, fmt)
    assert report["inputs"] == ["image"] and report["outputs"] == ["logits"]
    assert report["parity"]["max_probability_diff"] <= 1e-4
    paths, arrays = user_images(tmp_path)
    (logits,), meta = run_file(out, fmt, arrays)
    predicted = json_lines(runner.invoke(app, ["predict", *paths, "-c", "run", "--json"]).stdout)
    np.testing.assert_allclose(softmax(logits), [p["probabilities"] for p in predicted], atol=1e-5)
    assert meta["model"] == model and meta["family"] == "classify" and meta["classes"] == list(range(10))
    assert meta["preprocessing"]["normalize"]["where"] == "inside the model"
    assert meta["temperature"] == store.resolve("run").temperature
    assert "sum_temperature" not in meta and "target" not in meta


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_adder_file_takes_an_image_and_a_number(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path, fmt: str
) -> None:
    train(runner, "adder", "--arg", "width=4")
    out = tmp_path / f"adder.{fmt}"
    report = export(runner, out, fmt)
    assert report["inputs"] == ["image", "number"] and report["outputs"] == ["digit_logits", "sum_logits"]
    paths, arrays = user_images(tmp_path)
    digit, total = run_file(out, fmt, arrays, np.full(len(arrays), 3, dtype=np.int64))[0]
    predicted = json_lines(runner.invoke(app, ["predict", *paths, "-c", "run", "--add", "3", "--json"]).stdout)
    np.testing.assert_allclose(softmax(digit), [p["digit_probabilities"] for p in predicted], atol=1e-5)
    np.testing.assert_allclose(softmax(total), [p["sum_probabilities"] for p in predicted], atol=1e-5)


def test_an_adders_files_agree_on_a_number_outside_0_to_9(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path
) -> None:
    """torch's one-hot raises on 10 and ONNX Runtime's gives zeros: the files both give NaN sums for such a row."""
    train(runner, "adder", "--arg", "width=4")
    _, arrays = user_images(tmp_path, n=4)
    numbers = np.array([3, 10, -1, 9], dtype=np.int64)
    answers = {}
    for fmt in ("onnx", "torchscript"):
        export(runner, tmp_path / f"adder.{fmt}", fmt)
        answers[fmt], meta = run_file(tmp_path / f"adder.{fmt}", fmt, arrays, numbers)
        run = store.resolve("run")
        assert meta["sum_temperature"] == run.sum_temperature and meta["number_range"] == [0, 9]
        assert "outside 0-9 gives NaN sum_logits" in meta["outputs"]
    (digit, total), (ts_digit, ts_total) = answers["onnx"], answers["torchscript"]
    assert np.isnan(total[1:3]).all() and np.isfinite(total[[0, 3]]).all() and np.isfinite(digit).all()
    np.testing.assert_allclose(total, ts_total, atol=1e-5)  # NaN where the other has NaN
    np.testing.assert_allclose(digit, ts_digit, atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_bags_file_names_its_target_and_answers_an_empty_bag_with_nan(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path, fmt: str
) -> None:
    args = ["--bags", "16", "--epochs", "1", "--pretrain-epochs", "1", "--target", "3", "--name", "run"]
    result = runner.invoke(app, ["train", "mil", *args])
    assert result.exit_code == 0, result.output
    out = tmp_path / f"bags.{fmt}"
    export(runner, out, fmt)
    bags = np.random.default_rng(0).random((3, 4, 1, 28, 28), dtype=np.float32)
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=bool)
    (logit, attention), meta = run_file(out, fmt, bags, mask)
    assert meta["target"] == 3 and "temperature" not in meta and "classes" not in meta
    assert np.isnan(logit[1]) and np.isfinite(logit[[0, 2]]).all()
    np.testing.assert_allclose(attention.sum(axis=1), [1, 0, 1], atol=1e-6)
    assert (attention[~mask] == 0).all()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_embedding_file_gives_the_models_embedding(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path, fmt: str
) -> None:
    train(runner, "siamese", "--arg", "width=4", "--arg", "dim=8")
    out = tmp_path / f"siamese.{fmt}"
    report = export(runner, out, fmt)
    assert report["outputs"] == ["embedding"] and report["parity"]["max_probability_diff"] is None
    _, arrays = user_images(tmp_path, n=5)
    (embedding,), meta = run_file(out, fmt, arrays)
    model = store.load(store.resolve("run"), torch.device("cpu")).eval()
    with torch.no_grad():
        expected = model.features(torch.from_numpy(arrays)).numpy()
    assert embedding.shape == (5, 8) and meta["family"] == "triplet"
    assert "temperature" not in meta and "classes" not in meta  # an embedding is neither divided nor over digits
    np.testing.assert_allclose(embedding, expected, atol=1e-5)


def test_without_mnist_the_bundled_run_is_checked_on_synthetic_images(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "bundled.pt"  # the suffix names the format
    result = runner.invoke(app, ["export", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "torchscript" in result.stdout and "synthetic images" in result.stdout and "cnn-pretrained" in result.stdout
    extra = {"meta.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["meta.json"])["test_accuracy"] == 0.9953
    assert loaded(torch.rand(1, 1, 28, 28)).shape == (1, 10)  # any batch size, one included


@pytest.mark.parametrize(
    "args,says",
    [
        (["--format", "tf", "-o", "x.onnx"], "unknown format 'tf'; choose onnx or torchscript"),
        (["-o", "model.bin"], "which format for model.bin? give --format onnx or torchscript"),
        (["-f", "onnx", "-o", "-"], "-o -: the export is a binary file"),
        (["-o", "-"], "-o -: the export is a binary file and the summary goes to standard output"),
        (["-o", "/dev/stderr"], "-o /dev/stderr: the export is a binary file and messages go to standard error"),
        (["-f", "torchscript", "-o", "/dev/fd/2"], "-o /dev/fd/2: the export is a binary file and messages go to"),
        (["--format", "torchscript", "-o", "model.onnx"], "-o model.onnx: the suffix .onnx says onnx, not torchscript"),
        (["-f", "onnx", "-o", "model.PT"], "-o model.PT: the suffix .pt says torchscript, not onnx"),
    ],
)
def test_bad_formats_and_outputs_are_refused_in_one_line(runner: CliRunner, args: list[str], says: str) -> None:
    result = runner.invoke(app, ["export", *args])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {says}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_a_folder_is_not_replaced(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "-f", "torchscript", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "it is a folder" in result.stderr
    assert tmp_path.is_dir()


def test_onnx_without_the_export_extra_says_how_to_get_it(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    result = runner.invoke(app, ["export", "-f", "onnx", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert result.stderr == "error: --format onnx needs the export extra: pip install 'mnistcli[export]'\n"


def test_a_file_that_does_not_match_torch_is_not_written(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "m.pt"
    out.write_bytes(b"old")
    monkeypatch.setattr(exporting, "TOLERANCE", -1.0)  # no difference is small enough
    result = runner.invoke(app, ["export", "-o", str(out)])
    assert result.exit_code == 1 and "differs from torch's" in result.stderr and "was not written" in result.stderr
    assert out.read_bytes() == b"old"


def test_a_wrong_mnist_data_dir_is_an_error_not_synthetic_images(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in `mnist eval`: a folder the user named that holds no MNIST is said, not replaced by synthetic images."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("MNIST_DATA_DIR", str(empty))
    out = tmp_path / "m.pt"
    result = runner.invoke(app, ["export", "-o", str(out)])
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {empty} (MNIST_DATA_DIR): no MNIST file")
    assert result.stderr.count("\n") == 1 and not out.exists()
    evaluated = runner.invoke(app, ["eval"])  # the same words as mnist eval
    assert evaluated.exit_code == 1 and evaluated.stderr.splitlines()[0].startswith(f"error: {empty} (MNIST_DATA_DIR)")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_diverged_run_is_refused_before_any_export(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    real = exporting.load_checkpoint

    def diverged(*args: object) -> tuple:
        run, model, rest = real(*args)  # type: ignore[arg-type]
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
        return run, model, rest

    monkeypatch.setattr(exporting, "load_checkpoint", diverged)
    out = tmp_path / "m.bin"
    result = runner.invoke(app, ["export", "-f", fmt, "-o", str(out)])
    assert result.exit_code == 1, result.output
    says = "error: cnn-pretrained: the model's output is not a number: the run diverged; nothing was written\n"
    assert result.stderr == says and not out.exists()


def test_a_tracer_that_fails_is_one_line_not_a_traceback(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Tracer cannot infer type of output\n  pages of explanation\n  and more")

    monkeypatch.setattr(torch.jit, "trace", fails)
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        result.stderr
        == "error: the TorchScript exporter failed on 'cnn-pretrained': Tracer cannot infer type of output\n"
    )


@pytest.mark.parametrize("family", sorted(families_where(lambda f: f.exported is not None)))
def test_each_familys_file_carries_its_own_keys_and_a_short_accuracy(family: str) -> None:
    """Every file has the common keys; a temperature only where outputs are divided by one; float32 artefacts go."""
    run = store.resolve("cnn-pretrained")
    metrics = {**run.meta["metrics"], "test_accuracy": 0.9900000095367432}  # a float32 stored as a double
    forged = dataclasses.replace(run, meta={**run.meta, "metrics": metrics})
    spec = get_family(family).exported
    assert spec is not None
    meta = exporting.metadata(forged, spec)
    assert META_KEYS | {"model_args", "test_measure", "trained_with"} <= set(meta)
    assert meta["test_accuracy"] == 0.99
    divided = {"classify": {"temperature"}, "ensemble": {"temperature"}, "adder": {"temperature", "sum_temperature"}}
    assert {k for k in meta if "temperature" in k} == divided.get(family, set())
    assert ("classes" in meta) == (family in divided)
