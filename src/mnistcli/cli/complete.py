"""Shell completion: model names, run names and checkpoint references, without importing torch.

The shell runs `mnist` on every TAB, so these must be fast: model names come from the model
modules' source (`registry.declared_models`, nothing imported), run names from the folder names
under the runs folder (no checkpoint is opened). Each callback returns (value, help) pairs; zsh
and fish show the help beside the value, bash the values alone.
"""

from __future__ import annotations

from pathlib import Path

from mnistcli import paths
from mnistcli.registry import declared_models

BUNDLED = Path(__file__).resolve().parent.parent / "pretrained"  # store.BUNDLED_ROOT, without importing torch
META, LOG = "meta.json", "log.jsonl"  # store.META, runlog.LOG: a test checks they agree


def _folders(root: Path, saved_only: bool) -> list[Path]:
    """Run folders under `root`, oldest first; with `saved_only`, only complete checkpoints."""
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:  # no runs yet, or unreadable: nothing to complete
        return []
    keep = [p for p in folders if (p / META).is_file() or (not saved_only and (p / LOG).is_file())]
    return sorted(keep, key=lambda p: (p.stat().st_mtime, p.name))


def model_names(incomplete: str) -> list[tuple[str, str]]:
    """Registered model names starting with `incomplete` (`train MODEL`, `models PATTERN`)."""
    return [(name, "model") for name in declared_models() if name.startswith(incomplete)]


def run_names(incomplete: str) -> list[tuple[str, str]]:
    """Names of runs, interrupted ones too, starting with `incomplete` (`checkpoints rm`, `plot`)."""
    return [
        (p.name, "run" if (p / META).is_file() else "interrupted run")
        for p in _folders(paths.runs_dir(), saved_only=False)
        if p.name.startswith(incomplete)
    ]


def checkpoint_refs(incomplete: str) -> list[tuple[str, str]]:
    """What `-c/--checkpoint` takes: a saved run's name, a bundled checkpoint, or a model name (its latest run)."""
    found = [(p.name, "run") for p in _folders(paths.runs_dir(), saved_only=True)]
    found += [(p.name, "bundled") for p in _folders(BUNDLED, saved_only=True)]
    taken = {name for name, _ in found}
    found += [(name, "its latest run") for name in declared_models() if name not in taken]
    return [(name, what) for name, what in found if name.startswith(incomplete)]
