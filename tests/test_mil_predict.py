"""`mnist predict --bag` and `mnist embed` on a multiple-instance (bags) checkpoint, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mnistcli import store
from mnistcli.cli import app
from mnistcli.data.images import load_image
from tests.helpers import make_digits, save_png


@pytest.fixture(scope="module")
def mil_run(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny `mil` checkpoint (10 bags, one epoch: a checkpoint, not a good one); returns its folder."""
    home = tmp_path_factory.mktemp("mil-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNISTCLI_HOME", str(home))
        patch.setenv("MNIST_DATA_DIR", str(synthetic_dir))
        result = CliRunner().invoke(app, "train mil --bags 10 --epochs 1 --pretrain-epochs 1 --name bags".split())
    assert result.exit_code == 0, result.output
    return str(home / "runs" / "bags")


@pytest.fixture
def pictures(tmp_path: Path) -> dict[str, Path]:
    """Two bag folders (b1: 3 digits and a hidden file; b2: 4 digits and notes.txt) and two loose digits."""
    images, _ = make_digits(9, seed=3)
    b1, b2 = tmp_path / "b1", tmp_path / "b2"
    b1.mkdir()
    b2.mkdir()
    for i, name in enumerate(["c.png", "a.png", "b.jpg"]):
        save_png(images[i], b1 / name)
    save_png(images[3], b1 / ".hidden.png")
    for i in range(4):
        save_png(images[4 + i], b2 / f"{i}.png")
    (b2 / "notes.txt").write_text("not a digit")
    return {
        "b1": b1,
        "b2": b2,
        "x": save_png(images[8], tmp_path / "x.png"),
        "y": save_png(images[0], tmp_path / "y.png"),
    }


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


def test_each_folder_is_a_bag_and_the_loose_files_one_more(
    runner: CliRunner, mil_run: str, pictures: dict[str, Path]
) -> None:
    b1, b2, x, y = (str(pictures[k]) for k in ("b1", "b2", "x", "y"))
    result = runner.invoke(app, ["predict", "--bag", b1, x, b2, y, "-c", mil_run, "--json"])
    assert result.exit_code == 0, result.output
    bags = lines(result.stdout)
    assert [b["bag"] for b in bags] == [b1, None, b2]  # the loose files' bag where the first of them was given
    assert bags[0]["paths"] == [f"{b1}/a.png", f"{b1}/b.jpg", f"{b1}/c.png"]  # sorted by name, hidden file left out
    assert bags[1]["paths"] == [x, y]
    assert bags[2]["paths"] == [f"{b2}/{i}.png" for i in range(4)]
    assert bags[2]["ignored"] == [f"{b2}/notes.txt"] and bags[0]["ignored"] == []
    assert "notes.txt" in result.stderr
    for bag in bags:
        assert len(bag["attention"]) == len(bag["paths"])
        assert sum(bag["attention"]) == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= bag["probability"] <= 1.0 and bag["positive"] == (bag["probability"] >= 0.5)
        assert bag["target"] == 9 and bag["checkpoint"] == "bags" and bag["model"] == "mil"


def test_answers_are_the_models_own(runner: CliRunner, mil_run: str, pictures: dict[str, Path]) -> None:
    """Probability = sigmoid(bag logit) and the attention weights, in path order, as the model gives them."""
    result = runner.invoke(app, ["predict", "--bag", str(pictures["b2"]), "-c", mil_run, "--json"])
    assert result.exit_code == 0, result.output
    (bag,) = lines(result.stdout)
    model = store.load(store.resolve(mil_run), torch.device("cpu")).eval()
    x = torch.from_numpy(np.stack([load_image(p) for p in bag["paths"]]))[None, :, None]
    with torch.no_grad():
        logit, weights = model(x, torch.ones(1, x.shape[1], dtype=torch.bool))
    assert bag["probability"] == pytest.approx(float(torch.sigmoid(logit[0])), abs=1e-5)
    assert bag["attention"] == pytest.approx(weights[0].tolist(), abs=1e-5)
    # The same images in another order: the same probability (a bag is a set), the weights follow their images.
    paths = bag["paths"][::-1]
    again = lines(runner.invoke(app, ["predict", "--bag", *paths, "-c", mil_run, "--json"]).stdout)[0]
    assert again["probability"] == pytest.approx(bag["probability"], abs=1e-5)
    assert again["attention"] == pytest.approx(bag["attention"][::-1], abs=1e-5)


def test_paths_from_stdin(runner: CliRunner, mil_run: str, pictures: dict[str, Path]) -> None:
    given = f"{pictures['b1']}\n\n{pictures['x']}\n{pictures['b2']}\n"
    result = runner.invoke(app, ["predict", "--bag", "-", "-c", mil_run, "--json"], input=given)
    assert result.exit_code == 0, result.output
    assert [b["bag"] for b in lines(result.stdout)] == [str(pictures["b1"]), None, str(pictures["b2"])]


def test_a_bags_checkpoint_predicts_bags_without_bag_too(
    runner: CliRunner, mil_run: str, pictures: dict[str, Path]
) -> None:
    args = [str(pictures["b1"]), str(pictures["x"]), str(pictures["y"]), "-c", mil_run, "--json"]
    plain, bagged = runner.invoke(app, ["predict", *args]), runner.invoke(app, ["predict", "--bag", *args])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout == bagged.stdout and len(lines(plain.stdout)) == 2


def test_piped_output_is_one_row_per_image(runner: CliRunner, mil_run: str, pictures: dict[str, Path]) -> None:
    result = runner.invoke(app, ["predict", "--bag", str(pictures["b1"]), str(pictures["x"]), "-c", mil_run])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(r[0], r[2]) for r in rows] == [
        (str(pictures["b1"]), f"{pictures['b1']}/{name}") for name in ("a.png", "b.jpg", "c.png")
    ] + [("-", str(pictures["x"]))]
    assert sum(float(r[3]) for r in rows[:3]) == pytest.approx(1.0, abs=1e-3) and float(rows[3][3]) == 1.0


def test_bad_bags_fail_in_one_line_each_and_the_others_go_through(
    runner: CliRunner, mil_run: str, pictures: dict[str, Path], tmp_path: Path
) -> None:
    empty, text_only, broken = tmp_path / "empty", tmp_path / "text", tmp_path / "broken"
    for folder in (empty, text_only, broken):
        folder.mkdir()
    (text_only / "readme.md").write_text("no digits here")
    save_png(make_digits(1, seed=4)[0][0], broken / "a.png")
    (broken / "b.png").write_bytes(b"not a png")
    missing = tmp_path / "nowhere.png"
    args = [str(p) for p in (empty, pictures["b1"], text_only, broken, missing)]
    result = runner.invoke(app, ["predict", "--bag", *args, "-c", mil_run, "--json"])
    assert result.exit_code == 1
    assert [b["bag"] for b in lines(result.stdout)] == [str(pictures["b1"])]
    errors = result.stderr.splitlines()
    assert errors == [
        f"error: {empty}: no images to make a bag of (the folder is empty)",
        f"error: {text_only}: no images to make a bag of (1 file, none of them an image (readme.md))",
        f"error: {broken}/b.png: not a readable image; bag {broken} is not predicted",
        f"error: {missing}: no such file; the bag of loose files is not predicted",
    ]
    assert "Traceback" not in result.output


def test_a_folder_of_bag_folders_says_to_give_each(
    runner: CliRunner, mil_run: str, pictures: dict[str, Path], tmp_path: Path
) -> None:
    outer = tmp_path / "outer"
    (outer / "inner").mkdir(parents=True)
    save_png(make_digits(1, seed=5)[0][0], outer / "inner" / "a.png")
    result = runner.invoke(app, ["predict", "--bag", str(pictures["b1"]), str(outer), "-c", mil_run, "--json"])
    assert result.exit_code == 1 and len(lines(result.stdout)) == 1
    assert result.stderr == (
        f"error: {outer}: no images to make a bag of (sub-folders are not read; give each one as a bag, e.g. {outer}/*/)\n"
    )


def test_plot_draws_each_bag(runner: CliRunner, mil_run: str, pictures: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "out" / "bags.png"
    args = ["predict", "--bag", str(pictures["b1"]), str(pictures["b2"]), "-c", mil_run, "--plot", str(png)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote 2 bags with attention weights to {png}" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--add", "3"], "--add is for adder checkpoints and --bag for bags checkpoints; give one of them"),
        (["--show-input", "seen"], "--show-input is for predictions of single images"),
    ],
)
def test_options_that_do_not_go_with_bag(
    runner: CliRunner, mil_run: str, pictures: dict[str, Path], extra: list[str], message: str
) -> None:
    result = runner.invoke(app, ["predict", "--bag", str(pictures["b1"]), "-c", mil_run, *extra])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {message}") and len(result.stderr.splitlines()) == 1


def test_bag_on_a_classifier_is_refused(runner: CliRunner, synthetic_env: Path, pictures: dict[str, Path]) -> None:
    trained = runner.invoke(app, "train linear --epochs 1 --per-class 5 --name lin".split())
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["predict", "--bag", str(pictures["b1"]), "-c", "lin"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == "error: --bag is for bags checkpoints; 'lin' is a classify model\n"


def test_bag_with_no_bags_run_says_what_to_train(runner: CliRunner, pictures: dict[str, Path]) -> None:
    result = runner.invoke(app, ["predict", "--bag", str(pictures["b1"])])
    assert result.exit_code == 1 and "mnist train mil" in result.stderr


def test_embed_gives_instance_features(runner: CliRunner, mil_run: str, pictures: dict[str, Path]) -> None:
    result = runner.invoke(app, ["embed", str(pictures["b2"]), "-c", mil_run, "--json"])
    assert result.exit_code == 0, result.output
    rows = lines(result.stdout)
    model = store.load(store.resolve(mil_run), torch.device("cpu")).eval()
    assert [r["path"] for r in rows] == [f"{pictures['b2']}/{i}.png" for i in range(4)]
    assert {len(r["embedding"]) for r in rows} == {model.feature_dim}
    with torch.no_grad():
        expected = model.features(torch.from_numpy(load_image(rows[0]["path"]))[None, None])
    assert rows[0]["embedding"] == pytest.approx(expected[0].tolist(), abs=1e-4)
