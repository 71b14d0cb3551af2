"""`mnist predict` asks the checkpoint's family: every family either answers or is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcli.api.common import in_input_order
from mnistcli.cli import app
from mnistcli.errors import ImageError
from mnistcli.families import families_where, family_names, get_family
from mnistcli.registry import list_models
from mnistcli.reports import Failure
from tests.helpers import make_digits, save_png

TINY = "--epochs 1 --per-class 5 --batch-size 25"  # a checkpoint of the family, not a good one


@pytest.mark.parametrize("family", family_names())
def test_every_family_predicts_or_is_refused_in_one_line(
    family: str, runner: CliRunner, synthetic_env: Path, tmp_path: Path
) -> None:
    model = next(e.name for e in list_models() if e.family == family)
    trained = runner.invoke(app, [*f"train {model} {TINY} --name run".split()])
    assert trained.exit_code == 0, trained.output
    images, _ = make_digits(2, seed=1)
    paths = [str(save_png(image, tmp_path / f"{i}.png")) for i, image in enumerate(images)]
    options = ["--add", "0"] if "add" in get_family(family).predict_options else []
    result = runner.invoke(app, ["predict", *paths, "-c", "run", *options, "--json"])
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    if "bag" in get_family(family).predict_options:  # multiple-instance: the loose files are one bag
        assert result.exit_code == 0, result.output
        assert [a["paths"] for a in answers] == [paths]
    elif get_family(family).predicts:
        assert result.exit_code == 0, result.output
        assert [a["path"] for a in answers] == paths
    else:
        assert result.exit_code == 1 and result.stdout == ""
        takers = " or ".join(sorted(families_where(lambda f: f.predicts)))
        assert result.stderr == f"error: checkpoint 'run' is a {family} model; this command needs {takers}\n"


def test_results_come_back_in_input_order_with_failures_in_place() -> None:
    bad = ImageError("b.png", "not a readable image")
    items = [("a.png", 1), ("b.png", bad), ("c.png", 2)]
    seen: list[tuple[list[str], list[int]]] = []

    def answer(paths: list[str], values: list[int]) -> list[str]:
        seen.append((paths, values))
        return [f"{p}={v}" for p, v in zip(paths, values, strict=True)]

    assert in_input_order(items, answer) == ["a.png=1", Failure("b.png", str(bad)), "c.png=2"]
    assert seen == [(["a.png", "c.png"], [1, 2])]  # one call, with the readable items only
    assert in_input_order([("b.png", bad)], answer) == [Failure("b.png", str(bad))]
    assert len(seen) == 1  # never called without a readable item
    with pytest.raises(ValueError):
        in_input_order(items, lambda paths, values: [np.zeros(1)])  # one answer for two images
