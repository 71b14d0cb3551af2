"""`--help` at 80 columns, bad values, and shell completion, as a user meets them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mnistcli import registry, store
from mnistcli.cli import app, complete
from mnistcli.store import runlog


def commands(group: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the app: (), ('train',), ('checkpoints', 'rm'), ..."""
    found = [path]
    for name, command in getattr(group, "commands", {}).items():
        found += commands(command, (*path, name))
    return found


COMMANDS = commands(typer.main.get_command(app))


def test_every_command_is_found() -> None:
    assert {("train",), ("eval",), ("checkpoints", "rm"), ("plot",)} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "mnist")
def test_help_reads_well_at_80_columns(runner: CliRunner, monkeypatch: pytest.MonkeyPatch, command: tuple) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    text = result.output
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, too_wide
    for noise in ("<bool>", "BOOLEAN", "<=x<=", "9223372036854775807", "{", "<list[", "[model]", "names..."):
        assert noise not in text, f"{noise!r} in `mnist {' '.join(command)} --help`"


def test_train_help_is_grouped_into_panels(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = runner.invoke(app, ["train", "--help"]).output
    for panel in ("Optimisation", "Data", "Stopping early", "Triplet and contrastive models", "The run"):
        assert f"─ {panel} ─" in text
    assert "Usage: mnist train [OPTIONS] [MODEL]" in text
    # The model's own check interval, read from the registry, not a fixed number.
    cnn_fast = registry.get_entry("cnn-fast").recipe["check_every"]
    assert f"cnn-fast {cnn_fast:g}" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--optimizer", "rmsprop"], "'rmsprop' is not one of sgd, nesterov, adam, adamw, muon"),
        (["train", "--scheduler", "linear"], "'linear' is not one of none, step, cosine, onecycle"),
        (["eval", "--device", "tpu"], "'tpu' is not one of auto, cpu, cuda, mps"),
        (["train", "--seed", "-1"], "-1 is out of range: a seed is from 0 to 2**63 - 1"),
        (["eval", "--seed", "2e3"], "'2e3' is not a whole number"),
    ],
)
def test_a_bad_value_reads_plainly(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())
    assert "Value error" not in result.output


def test_declared_models_match_the_registry() -> None:
    """Completion and --help read model names and recipes from source; they must be the registry's."""
    assert registry.declared_models() == {e.name: e.recipe for e in registry.list_models()}


def test_completion_constants_match_the_store() -> None:
    assert (complete.META, complete.LOG, complete.BUNDLED) == (store.META, runlog.LOG, store.BUNDLED_ROOT.resolve())


def make_runs(home: Path) -> None:
    """One saved run and one interrupted run (log only) under the home's runs folder."""
    saved, cut = home / "runs" / "cnn-fast-20261122-215959", home / "runs" / "lenet-cut"
    saved.mkdir(parents=True)
    (saved / "meta.json").write_text("{}")
    cut.mkdir()
    (cut / "log.jsonl").write_text("")
    (home / "runs" / ".tmp-save").mkdir()  # a save in progress: never offered


def test_completion_callbacks(isolated_home: Path) -> None:
    assert complete.run_names("") == []  # no runs folder yet
    make_runs(isolated_home)
    assert [n for n, _ in complete.model_names("cnn")] == ["cnn", "cnn-wide", "cnn-w32", "cnn-fast"]
    assert dict(complete.run_names("")) == {"cnn-fast-20261122-215959": "run", "lenet-cut": "interrupted run"}
    refs = dict(complete.checkpoint_refs("cnn"))
    # A saved run, the bundled checkpoint and model names; never the interrupted run (it has no checkpoint).
    assert refs == {
        "cnn-fast-20261122-215959": "run",
        "cnn-pretrained": "bundled",
        "cnn": "its latest run",
        "cnn-wide": "its latest run",
        "cnn-w32": "its latest run",
        "cnn-fast": "its latest run",
    }
    assert "lenet-cut" not in dict(complete.checkpoint_refs("lenet"))


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("mnist train cnn", {"cnn", "cnn-wide", "cnn-w32", "cnn-fast"}),
        ("mnist eval cnn-f", {"cnn-fast-20261122-215959", "cnn-fast"}),
        ("mnist predict x.png -c cnn-f", {"cnn-fast-20261122-215959", "cnn-fast"}),
        ("mnist checkpoints rm ", {"cnn-fast-20261122-215959", "lenet-cut"}),
        ("mnist plot le", {"lenet-cut"}),
        ("mnist train --optimizer ada", {"adam", "adamw"}),
    ],
)
def test_completion_through_the_shell_protocol(isolated_home: Path, words: str, expected: set[str]) -> None:
    """What bash gets on TAB: the same protocol `mnist --install-completion` installs."""
    make_runs(isolated_home)
    env = {**os.environ, "_MNIST_COMPLETE": "complete_bash", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    code = (
        "import sys\nfrom mnistcli.cli import main\nsys.argv = ['mnist']\ntry: main()\nexcept SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'completion imported torch'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == expected


def test_reading_registrations_from_source_skips_what_is_not_literal() -> None:
    """A module-level dict of classes, an unknown `**NAME` or an attribute call must not break start-up."""
    import ast

    tree = ast.parse(
        "ACTS = {'relu': nn.ReLU}\n"
        "BASE = {'epochs': 3}\n"
        "@registry.register_model('a', family='classify', description='x', **BASE, lr=0.1, act=nn.ReLU)\n"
        "def a(): ...\n"
        "@register_model('b', family='classify', description='y', **LATER)\n"
        "def b(): ...\n"
    )
    dicts = {"BASE": {"epochs": 3}}
    assert registry._literal(tree.body[0].value) is None
    calls = [node.decorator_list[0] for node in tree.body[2:]]
    assert [registry._registration(c) for c in calls] == ["a", "b"]
    assert registry._recipe(calls[0], dicts) == {"epochs": 3, "lr": 0.1}
    assert registry._recipe(calls[1], dicts) == {}
