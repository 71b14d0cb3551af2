"""Names and paths a user copies are never cut, on an 80-column terminal with a long run name."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mnistcli import store
from mnistcli.cli import app
from mnistcli.render import catalog, predicting, train
from tests.helpers import make_digits, save_png

LONG = "a-rather-long-run-name-for-the-cnn-fast-model-20261122-215959"


def first_column(table: str) -> str:
    """The first column's cells of a drawn table, joined: a folded name reads whole again."""
    return "".join(line[1:].split("│")[0].strip() for line in table.splitlines() if line.startswith("│"))


def terminal(monkeypatch: pytest.MonkeyPatch, module: object, attr: str, width: int = 80) -> Console:
    """Point `module.attr` (a rich console) at an 80-column terminal; returns it to read back."""
    console = Console(width=width, force_terminal=True, color_system=None, record=True, file=open("/dev/null", "w"))
    monkeypatch.setattr(module, attr, console)
    return console


@pytest.fixture
def long_run(isolated_home: Path) -> Path:
    """The bundled cnn copied into the store under a long name (a real checkpoint)."""
    folder = isolated_home / "runs" / LONG
    shutil.copytree(store.BUNDLED_ROOT / "cnn-pretrained", folder)
    return folder


@pytest.mark.parametrize("width", [120, 80, 50])
def test_checkpoints_never_cut_a_name(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, long_run: Path, width: int
) -> None:
    console = terminal(monkeypatch, catalog, "out", width)
    assert runner.invoke(app, ["checkpoints"]).exit_code == 0
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    assert "accuracy" in text
    if width >= 80:
        assert LONG in text  # whole on one line; the date and size gave way first
        assert ("created" in text) == (width >= 120)
    else:  # narrower than the name and accuracy: it folds onto the next line, whole
        assert LONG in first_column(text)


def test_training_summary_shows_whole_paths(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, synthetic_env: Path
) -> None:
    console = terminal(monkeypatch, train, "err")
    result = runner.invoke(app, ["train", "linear", "--epochs", "1", "--name", LONG])
    assert result.exit_code == 0, result.output
    text = console.export_text(styles=False)
    run = store.resolve(LONG).path
    assert f"trained linear -> {LONG}" in text.replace("\n", "")
    # soft-wrapped: one logical line each, however the terminal wraps them
    assert f"checkpoint {run}" in text and f"log        {run / 'log.jsonl'}" in text
    assert "…" not in text


def test_oneshot_keeps_file_names_and_drops_the_bar(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    support = tmp_path / "support"
    digits, labels = make_digits(20, seed=3)
    for d in (0, 1):
        (support / str(d)).mkdir(parents=True)
        save_png(digits[labels == d][0], support / str(d) / "a.png")
    query = save_png(digits[labels == 1][1], tmp_path / f"{LONG}-query.png")
    monkeypatch.setattr(predicting, "is_terminal", lambda: True)
    for width in (220, 80):
        console = terminal(monkeypatch, predicting, "out", width)
        args = ["oneshot", "--support-dir", str(support), str(query), "-c", "cnn-pretrained"]
        assert runner.invoke(app, args).exit_code == 0
        text = console.export_text()
        assert str(query) in first_column(text) and "…" not in text and re.search(r"\d+\.\d\d%", text)
        assert ("█" in text) == (width == 220)  # the bar is the first thing to go
