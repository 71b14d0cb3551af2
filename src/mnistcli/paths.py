"""Where mnistcli keeps its files: one home folder for checkpoints and the downloaded dataset.

`MNISTCLI_HOME` overrides the default, the platform's per-user data folder
(`~/.local/share/mnistcli` on Linux, `~/Library/Application Support/mnistcli` on macOS).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "MNISTCLI_HOME"


def home() -> Path:
    """Return the mnistcli home folder (not created here)."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("mnistcli", appauthor=False)


def runs_dir() -> Path:
    """Return the folder holding one sub-folder per training run."""
    return home() / "runs"


def data_cache_dir() -> Path:
    """Return the folder the MNIST download goes to."""
    return home() / "data" / "mnist"
