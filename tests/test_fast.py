"""The fast path (api/serving.py): predict, read, embed and oneshot on onnxruntime without importing torch, with
the torch path's answers; and everything it cannot do going to torch, or, with --backend onnx, said in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcli import store
from mnistcli.api import serving
from mnistcli.cli import app
from mnistcli.families import families_where
from mnistcli.protocols import fewshot, onnxrt
from tests.helpers import make_digits, save_png

pytest.importorskip("onnxruntime")

TINY = "--epochs 1 --per-class 5 --batch-size 25"
TOLERANCE = 1e-5  # in probability (an embedding's value), as the issue asks


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def pictures(folder: Path, n: int = 6, seed: int = 1) -> list[str]:
    images, _ = make_digits(n, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    return [str(save_png(image, folder / f"{i}.png")) for i, image in enumerate(images)]


def train(runner: CliRunner, model: str, name: str, extra: str = "") -> store.Run:
    result = runner.invoke(app, [*f"train {model} {TINY} --name {name} {extra}".split()])
    assert result.exit_code == 0, result.output
    return store.resolve(name)


def both(runner: CliRunner, args: list[str]) -> tuple[list[dict], list[dict]]:
    """The --json answers of `args` on onnx and on torch (each must succeed)."""
    answers = []
    for backend in ("onnx", "torch"):
        result = runner.invoke(app, [*args, "--backend", backend, "--json"])
        assert result.exit_code == 0, (backend, result.output)
        answers.append(lines(result.stdout))
    return answers[0], answers[1]


def close(a: object, b: object) -> bool:
    """Equal, numbers to `TOLERANCE` (plus the 6-place rounding of what predictions carry)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= TOLERANCE + 1.1e-6  # type: ignore[arg-type]
    return a == b


def test_the_fast_paths_defaults_are_what_the_families_say() -> None:
    assert serving.PREDICTS == families_where(lambda f: f.predicts and f.predict_options == frozenset())
    assert serving.ADDS == families_where(lambda f: f.predicts and f.predict_options == frozenset({"add"}))
    assert serving.CLASSIFIES == families_where(lambda f: f.classifies)
    assert serving.FEWSHOT == families_where(lambda f: f.fewshot_by_default)
    assert serving.DEFAULT_SCALE == fewshot.DEFAULT_SCALE


def test_numpy_few_shot_arithmetic_is_torchs() -> None:
    import torch

    rng = np.random.default_rng(0)
    support, queries = rng.normal(size=(12, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    labels = np.array([0, 1, 2] * 4)
    ours = onnxrt.prototypes(support, labels, 3)
    theirs = fewshot.prototypes(torch.from_numpy(support), torch.from_numpy(labels), 3).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    d_ours, d_theirs = (
        onnxrt.distances(queries, ours),
        fewshot.distances(torch.from_numpy(queries), torch.from_numpy(theirs)),
    )
    np.testing.assert_allclose(d_ours, d_theirs.numpy(), atol=1e-5)
    np.testing.assert_allclose(onnxrt.confidences(d_ours, 7.0), fewshot.confidences(d_theirs, 7.0).numpy(), atol=1e-6)


def test_the_bundled_model_ships_its_onnx_file_and_answers_as_torch(runner: CliRunner, tmp_path: Path) -> None:
    bundled = store.resolve("cnn-pretrained")
    assert (bundled.path / onnxrt.ONNX).is_file()
    assert onnxrt.Session(bundled.path / onnxrt.ONNX).metadata[onnxrt.STAMP] == onnxrt.stamp(
        store.fingerprint(bundled.path)
    )
    paths = pictures(tmp_path / "in")
    fast, slow = both(runner, ["predict", *paths])
    assert close(fast, slow) and [a["path"] for a in fast] == paths
    fast, slow = both(runner, ["read", *paths])
    assert close(fast, slow)


@pytest.mark.parametrize(
    ("model", "command"),
    [
        ("cnn", "predict"),
        ("mlp", "read"),
        ("ensemble --members 2", "predict"),
        ("adder", "predict --add 7"),
        ("siamese", "embed"),
        ("simclr", "embed"),
    ],
)
def test_each_kind_of_model_answers_on_onnx_as_on_torch(
    model: str, command: str, runner: CliRunner, synthetic_env: Path, tmp_path: Path
) -> None:
    model, *extra = model.split()
    run = train(runner, model, "run", " ".join(extra))
    assert (run.path / onnxrt.ONNX).is_file()  # written when the run was saved
    paths = [*pictures(tmp_path / "in"), str(tmp_path / "missing.png")]
    name, *options = command.split()
    answers = []
    for backend in ("onnx", "torch"):
        result = runner.invoke(app, [name, *paths, "-c", "run", *options, "--backend", backend, "--json"])
        assert result.exit_code == 1, result.output  # the missing image: a failure, the others answered
        assert "missing.png" in result.stderr and "Traceback" not in result.output
        answers.append(lines(result.stdout))
    assert close(answers[0], answers[1]) and answers[0]


def test_oneshot_on_onnx_is_torchs(runner: CliRunner, synthetic_env: Path, tmp_path: Path) -> None:
    train(runner, "siamese", "emb")
    images, labels = make_digits(12, seed=3)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / "support" / f"c{label % 3}").mkdir(parents=True, exist_ok=True)
        save_png(image, tmp_path / "support" / f"c{label % 3}" / f"{i}.png")
    queries = pictures(tmp_path / "q", 4, seed=5)
    fast, slow = both(runner, ["oneshot", *queries, "--support-dir", str(tmp_path / "support")])
    assert close(fast, slow) and len(fast) == 4


def test_what_the_fast_path_cannot_do_goes_to_torch_or_is_refused_in_one_line(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path
) -> None:
    train(runner, "cnn", "c")
    paths = pictures(tmp_path / "in", 2)
    auto = runner.invoke(app, ["predict", *paths, "--tta", "--json"])
    assert auto.exit_code == 0, auto.output
    refused = runner.invoke(app, ["predict", *paths, "--tta", "--backend", "onnx"])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert "--backend onnx: --tta" in refused.stderr and "Traceback" not in refused.output
    gpu = runner.invoke(app, ["predict", *paths, "--backend", "onnx", "--device", "cuda"])
    assert gpu.exit_code == 2 and "runs on the CPU" in gpu.stderr
    features = runner.invoke(app, ["embed", *paths, "-c", "c", "--backend", "onnx"])  # a classifier's file: logits
    assert features.exit_code == 2 and "needs an embedding" in features.stderr
    assert runner.invoke(app, ["embed", *paths, "-c", "c"]).exit_code == 0  # auto: torch gives its features
    unknown = runner.invoke(app, ["predict", *paths, "-c", "nosuchrun", "--backend", "onnx"])
    assert unknown.exit_code == 1 and "no checkpoint 'nosuchrun'" in unknown.stderr
    assert runner.invoke(app, ["predict", *paths, "--backend", "gpu"]).exit_code == 2


def test_a_run_without_its_file_is_answered_by_torch_which_writes_it(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path
) -> None:
    run = train(runner, "cnn", "c")
    onnx = run.path / onnxrt.ONNX
    other = train(runner, "cnn", "d", "--seed 5")
    paths = pictures(tmp_path / "in", 2)
    onnx.unlink()
    missing = runner.invoke(app, ["predict", *paths, "-c", "c", "--backend", "onnx"])
    assert missing.exit_code == 2 and "has no model.onnx yet" in missing.stderr
    assert runner.invoke(app, ["predict", *paths, "-c", "c", "--backend", "torch"]).exit_code == 0
    assert not onnx.exists()  # torch asked for by name: nothing written
    assert runner.invoke(app, ["predict", *paths, "-c", "c"]).exit_code == 0
    assert onnx.is_file()  # auto: torch answered and wrote it
    shutil.copy(other.path / onnxrt.ONNX, onnx)  # another run's file: stale, never used
    stale = runner.invoke(app, ["predict", *paths, "-c", "c", "--backend", "onnx"])
    assert stale.exit_code == 2 and "not made from this run" in stale.stderr
    onnx.write_bytes(b"not a model")
    broken = runner.invoke(app, ["predict", *paths, "-c", "c", "--backend", "onnx"])
    assert broken.exit_code == 2 and "not a model onnxruntime can run" in broken.stderr
    fixed = runner.invoke(app, ["predict", *paths, "-c", "c", "--json"])
    assert fixed.exit_code == 0 and onnxrt.Session(onnx).metadata[onnxrt.STAMP] == onnxrt.stamp(
        store.fingerprint(run.path)
    )
    onnx.unlink()
    os.mkfifo(onnx)  # never waited on
    fifo = runner.invoke(app, ["predict", *paths, "-c", "c", "--backend", "onnx"])
    assert fifo.exit_code == 2 and "not a regular file" in fifo.stderr


def test_the_fast_path_imports_no_torch(synthetic_env: Path, tmp_path: Path, isolated_home: Path) -> None:
    runner = CliRunner()
    train(runner, "siamese", "emb")
    paths = pictures(tmp_path / "in", 3)
    for i, p in enumerate(paths):
        (tmp_path / "support" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, tmp_path / "support" / f"c{i % 2}" / f"{i}.png")
    commands = [
        ["predict", *paths],
        ["read", *paths],
        ["embed", *paths, "-c", "emb"],
        ["oneshot", *paths, "--support-dir", str(tmp_path / "support"), "-c", "emb"],
    ]
    env = {**os.environ, "MNISTCLI_HOME": str(isolated_home)}
    for command in commands:
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "mnistcli", *command, "--backend", "onnx"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, (command, out.stderr[-2000:])
        imported = [line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
        assert "onnxruntime" in imported and "torch" not in imported, command[0]


def test_what_each_command_suggests_training_is_what_the_families_say() -> None:
    from mnistcli.families import family_names, get_family

    def suggested(families: set[str]) -> str:
        return next(get_family(n).suggested_model for n in family_names() if n in families)

    assert serving.SUGGEST == {
        "predict": suggested(serving.PREDICTS),
        "add": suggested(serving.ADDS),
        "read": suggested(serving.CLASSIFIES),
        "oneshot": suggested(serving.FEWSHOT),
    }


def test_a_link_in_place_of_model_onnx_is_never_written_through(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path
) -> None:
    run = train(runner, "cnn", "c")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (run.path / onnxrt.ONNX).unlink()
    (run.path / onnxrt.ONNX).symlink_to(victim)
    paths = pictures(tmp_path / "in", 2)
    result = runner.invoke(app, ["predict", *paths, "-c", "c", "--json"])
    assert result.exit_code == 0, result.output  # torch answers
    assert victim.read_text() == "mine" and (run.path / onnxrt.ONNX).is_symlink()
    (run.path / onnxrt.ONNX).unlink()
    (run.path / onnxrt.ONNX).symlink_to(tmp_path / "nowhere.onnx")  # dangling: nothing made at its target
    assert runner.invoke(app, ["predict", *paths, "-c", "c"]).exit_code == 0
    assert not (tmp_path / "nowhere.onnx").exists()


def test_a_file_made_by_another_mnistcli_version_or_too_large_is_not_used(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = train(runner, "cnn", "c")
    paths = pictures(tmp_path / "in", 2)
    monkeypatch.setattr(onnxrt, "__version__", "99.0")  # an upgrade: the file must be made again
    stale = runner.invoke(app, ["predict", *paths, "-c", "c", "--backend", "onnx"])
    assert stale.exit_code == 2 and "not made from this run" in stale.stderr
    assert runner.invoke(app, ["predict", *paths, "-c", "c"]).exit_code == 0  # auto: torch, and a new file
    assert onnxrt.Session(run.path / onnxrt.ONNX).metadata[onnxrt.STAMP].endswith(" 99.0")
    huge = run.path / onnxrt.ONNX
    huge.unlink()
    with huge.open("wb") as f:
        f.truncate(onnxrt.MAX_BYTES + 1)  # sparse: refused from its size, never read
    big = runner.invoke(app, ["predict", *paths, "-c", "c", "--backend", "onnx"])
    assert big.exit_code == 2 and "larger than any model" in big.stderr


def test_a_broken_onnxruntime_never_fails_a_command(synthetic_env: Path, tmp_path: Path, isolated_home: Path) -> None:
    fake = tmp_path / "fake" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('this onnxruntime is broken')\n")
    env = {**os.environ, "MNISTCLI_HOME": str(isolated_home), "PYTHONPATH": str(tmp_path / "fake")}
    image = pictures(tmp_path / "in", 1)[0]

    def mnist(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mnistcli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    trained = mnist("train", "linear", "--epochs", "1", "--per-class", "5", "--name", "lin")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert not (isolated_home / "runs" / "lin" / "resume.safetensors").exists()
    answered = mnist("predict", image, "-c", "lin")
    assert answered.returncode == 0 and "Traceback" not in answered.stderr, answered.stderr[-2000:]
    refused = mnist("predict", image, "-c", "cnn-pretrained", "--backend", "onnx")  # a run with its file
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "broken" in refused.stderr


def test_embed_writing_its_vectors_imports_no_torch(tmp_path: Path, isolated_home: Path, synthetic_env: Path) -> None:
    train(CliRunner(), "siamese", "emb")
    paths = pictures(tmp_path / "in", 3)
    env = {**os.environ, "MNISTCLI_HOME": str(isolated_home)}
    for output in ("v.npy", "v.csv"):
        out = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "mnistcli",
                "embed",
                *paths,
                *("-c", "emb", "-o"),
                str(tmp_path / output),
                "--backend",
                "onnx",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        imported = [line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
        assert "torch" not in imported and (tmp_path / output).stat().st_size > 0


def test_a_cache_file_replaces_a_link_put_in_its_place_never_what_it_points_to(tmp_path: Path) -> None:
    from mnistcli.atomic import atomic_write_bytes

    victim, link = tmp_path / "victim.txt", tmp_path / "run" / "model.onnx"
    victim.write_text("mine")
    link.parent.mkdir()
    link.symlink_to(victim)
    atomic_write_bytes(link, b"model", own=True)
    assert victim.read_text() == "mine" and not link.is_symlink() and link.read_bytes() == b"model"
    with pytest.raises(Exception):  # noqa: B017  (a folder that is not there is not made)
        atomic_write_bytes(tmp_path / "gone" / "model.onnx", b"model", own=True)
    assert not (tmp_path / "gone").exists()
