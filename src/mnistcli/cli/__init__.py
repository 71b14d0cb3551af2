"""The `mnist` command line: options -> one api call -> render. Nothing else.

Commands live by family (train.py; eval.py; predict.py: predict, embed, oneshot; read.py; catalog.py: models,
checkpoints; settings.py); common.py holds the apps, the error boundary and shared options. Importing this
package registers every command; none of it imports torch until a command runs.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

# isort: off
from mnistcli.cli import train, eval, predict, read, plot, export, catalog, settings  # noqa: F401  (registers the commands, in --help's order)

# isort: on
from mnistcli import exiting
from mnistcli.cli.common import app

__all__ = ["app", "main"]


def _reader_left(console: Console) -> None:
    """rich ends the program with status 1 when the reader of its output has left (`mnist eval | head -1`); for a
    command-line tool that is no failure: raise it as the BrokenPipeError it is, which ends the command with 0."""
    console.quiet = True
    raise BrokenPipeError


Console.on_broken_pipe = _reader_left  # type: ignore[method-assign,assignment]  # typer's help consoles too


def main() -> None:
    """Console-script entry point."""
    if sys.stderr is None:  # started with stderr closed (`2>&-`): its messages go nowhere
        sys.stderr = open(os.devnull, "w")
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        print("error: standard output is closed", file=sys.stderr)
        raise SystemExit(1)
    try:
        app()
    except BrokenPipeError:  # `mnist predict ... | head`: the reader left; that is not an error
        raise SystemExit(exiting.flush(0)) from None
    except OSError as e:  # writing help or an error message failed (`mnist --help > /dev/full`)
        raise SystemExit(exiting.write_failed(e)) from None
    except SystemExit as done:
        if "torch.distributed" in sys.modules and os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1"):
            # one of several processes of a job (torchrun, --nproc) that may have joined its process group
            from mnistcli.api.launching import leave

            leave(done.code)  # never returns
        if "torch" in sys.modules and exiting.alone():
            exiting.leave(done.code)  # without the interpreter's finalization of torch: 0.3-0.5 s
        raise SystemExit(exiting.flush(done.code)) from None
