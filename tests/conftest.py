"""Shared fixtures: a private mnistcli home, synthetic MNIST written as IDX files, a CLI runner.

Tests marked `slow` (training on the real MNIST files, drawing PNGs, timing-insensitive but long
subprocess checks) run only with `python -m pytest --slow`; the default run stays under a minute.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import write_mnist

REAL_MNIST = os.environ.get("MNIST_DATA_DIR")  # captured before the autouse fixture clears it


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        help="also run the tests marked slow (those that train on real MNIST need MNIST_DATA_DIR)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --slow, leave out (deselect, not skip: no noise in the summary) the tests marked slow."""
    if config.getoption("--slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty mnistcli home and no MNIST_DATA_DIR (tests opt in)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MNISTCLI_HOME", str(home))
    monkeypatch.delenv("MNIST_DATA_DIR", raising=False)
    monkeypatch.setenv("MNISTCLI_MIRRORS", "http://127.0.0.1:9/")  # never the internet
    monkeypatch.setenv("COLUMNS", "120")
    return home


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a small synthetic MNIST (300 train, 100 test images, gzip)."""
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture
def synthetic_env(synthetic_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point MNIST_DATA_DIR at the synthetic data."""
    monkeypatch.setenv("MNIST_DATA_DIR", str(synthetic_dir))
    return synthetic_dir


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def real_mnist(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real MNIST folder from MNIST_DATA_DIR; skips the test if it is not set."""
    if not REAL_MNIST:
        pytest.skip("MNIST_DATA_DIR is not set")
    monkeypatch.setenv("MNIST_DATA_DIR", REAL_MNIST)
    return Path(REAL_MNIST)
