"""mnistcli/allocator.py: glibc keeps a command's freed memory for reuse, and every command asks it to."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mnistcli import allocator
from mnistcli.cli import app

# Five blocks of 2-6 MB, as a training step's activations, taken and freed fifty times; prints the page faults.
WORKLOAD = r"""
import resource, sys, numpy as np
if sys.argv[1] == "keep":
    from mnistcli import allocator
    assert allocator.keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    live = [np.ones(n << 14) for n in (16, 24, 32, 40, 48)]
    del live
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", WORKLOAD, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_faulting_fresh_pages() -> None:
    """By glibc's own rule the heap is trimmed each time the blocks are freed, and fresh pages fault in again (65,000
    faults here); kept, the first round's pages serve the other 49 (3,000)."""
    kept, default = faults("keep"), faults("default")
    assert kept * 5 < default, (kept, default)


def test_elsewhere_nothing_is_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False


def test_every_command_asks_for_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setenv("MNISTCLI_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["checkpoints", "--json"])
    assert result.exit_code == 0, result.output
    assert calls == [1]
