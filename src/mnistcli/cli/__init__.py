"""The `mnist` command line: options -> one api call -> render. Nothing else.

Commands live by family (train.py; eval.py; predict.py: predict, embed, oneshot; read.py; catalog.py: models,
checkpoints; settings.py); common.py holds the apps, the error boundary and shared options. Importing this
package registers every command; none of it imports torch until a command runs.
"""

from __future__ import annotations

import os
import sys

# isort: off
from mnistcli.cli import train, eval, predict, read, plot, export, catalog, settings  # noqa: F401  (registers the commands, in --help's order)

# isort: on
from mnistcli import exiting
from mnistcli.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except BrokenPipeError:  # `mnist predict ... | head`: the reader left; that is not an error
        raise SystemExit(exiting.flush(0)) from None
    except SystemExit as done:
        if "torch.distributed" in sys.modules and os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1"):
            # one of several processes of a job (torchrun, --nproc) that may have joined its process group
            from mnistcli.api.launching import leave

            leave(done.code)  # never returns
        if "torch" in sys.modules and exiting.alone():
            exiting.leave(done.code)  # without the interpreter's finalization of torch: 0.3-0.5 s
        raise SystemExit(exiting.flush(done.code)) from None
