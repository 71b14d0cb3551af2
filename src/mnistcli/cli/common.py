"""What every command shares: the Typer apps, the error boundary, option types and parsers.

torch is imported only inside the commands that need it (through `mnistcli.api`), so
`mnist --help` and `mnist --version` stay fast. Domain errors become one red line on stderr and
exit code 1 (2 for usage errors) here, at the boundary, and nowhere else.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, Optional, TypeVar

import typer

from mnistcli import __version__, allocator, exiting, render
from mnistcli.cli import complete
from mnistcli.cli.helptext import choice, either
from mnistcli.config import Backend, Device
from mnistcli.errors import PEER_EXIT, Interrupted, MnistError, PeerFailed, UsageError

app = typer.Typer(
    name="mnist",
    help="Train, evaluate and serve every classic family of MNIST model.",
    no_args_is_help=True,
    add_completion=True,  # mnist --install-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
checkpoints_app = typer.Typer(help="List or remove saved checkpoints (runs).", no_args_is_help=False)
app.add_typer(checkpoints_app, name="checkpoints")

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Turn domain errors into a one-line message and an exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        allocator.keep_freed_memory()  # before any tensor: freed memory reused, not faulted in anew (allocator.py)
        previous = _on_sigterm()
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            render.error(str(e))
            raise typer.Exit(2) from None
        except Interrupted as e:
            render.error(str(e), shared=True)
            raise typer.Exit(_exit_code()) from None
        except PeerFailed:  # another process of a data-parallel run failed, and says why
            raise typer.Exit(PEER_EXIT) from None
        except MnistError as e:
            render.error(str(e))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            render.error("interrupted", shared=True)
            raise typer.Exit(_exit_code()) from None
        except BrokenPipeError:  # `mnist predict ... | head`: the reader left, which is not a failure
            exiting.discard_stdout()
            raise typer.Exit(0) from None
        except OSError as e:  # the last line of defence: a file problem no layer below turned into its own error
            where = e.filename if e.filename is not None else _stdout_or_a_file(e)
            render.error(f"{os.fsdecode(where) if isinstance(where, bytes) else where}: {e.strerror or e}")
            raise typer.Exit(1) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def _stdout_or_a_file(e: OSError) -> str:
    """What an OSError without a file name failed to write: standard output if the error came from writing it (a
    rich console of stdout among the frames) or it still cannot take what is buffered for it (then dropped, so it
    is not reported twice), else some file."""
    tb, stdout = e.__traceback__, sys.stdout
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is stdout or getattr(owner, "file", None) is stdout:
            exiting.discard_stdout()
            return "standard output"
        tb = tb.tb_next
    try:
        stdout.flush()
    except OSError:
        exiting.discard_stdout()
        return "standard output"
    return "a file"


_stopped_by: list[int] = [0]  # the signal that is stopping this command, if SIGTERM is (`_on_sigterm`)


def _on_sigterm() -> Any:
    """Let SIGTERM (`kill PID`, a scheduler ending a job) stop the command as Ctrl-C does: a training saves what it
    has and says how to resume, its run is released, and the exit code is 143 (128 + SIGTERM), not a silent death.
    Returns the handler it replaced (None where it changed nothing: not the main thread, or one of several
    data-parallel processes, whose launcher stops them itself)."""
    if threading.current_thread() is not threading.main_thread() or os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        return None

    def handler(signum: int, frame: object) -> None:
        _stopped_by[0] = signum
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        raise KeyboardInterrupt

    _stopped_by[0] = 0
    return signal.signal(signal.SIGTERM, handler)


def _exit_code() -> int:
    """130 for Ctrl-C; 128 + the signal for another that stopped the command (143 for SIGTERM)."""
    return 128 + (_stopped_by[0] or signal.SIGINT)


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave parameter `name` (on the command line or in the environment), not its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def check_alone(ctx: typer.Context, option: str, allowed: set[str]) -> None:
    """Raise `UsageError` if any parameter besides `option` and `allowed` was given with it."""
    extra = [p for p in ctx.command.params if p.name not in allowed | {option} and p.name and given(ctx, p.name)]
    if extra:
        names = ", ".join(p.opts[0] if p.opts[0].startswith("-") else str(p.name).upper() for p in extra)
        raise UsageError(f"--{option} continues a run as it was started; it takes no {names}")


class EmbedFormat(str, Enum):
    npy = "npy"
    csv = "csv"


CheckpointOpt = Annotated[
    Optional[str],
    typer.Option(
        "--checkpoint",
        "-c",
        help="Run name, model name (its latest run) or checkpoint folder. Default: your latest run, else the bundled cnn.",
        metavar="CHECKPOINT",
        autocompletion=complete.checkpoint_refs,
    ),
]
DeviceOpt = Annotated[
    Device,
    typer.Option("--device", help=f"Where to compute: {either(Device)}.", metavar="DEVICE", parser=choice(Device)),
]
BackendOpt = Annotated[
    Backend,
    typer.Option(
        "--backend",
        help="What runs the model: onnx (onnxruntime, without importing torch: fast to start; needs the fast extra"
        " and the run's model.onnx), torch, or auto (onnx when it can, else torch, which then writes model.onnx"
        " for the next time).",
        metavar="BACKEND",
        parser=choice(Backend),
    ),
]
DataDirOpt = Annotated[
    Optional[str],
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help="Folder of MNIST IDX files (raw or .gz); remembered once it has worked. Default: $MNIST_DATA_DIR,"
        " else the remembered folder (`mnist settings`), else downloaded.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
ImagesArg = Annotated[
    list[str],
    typer.Argument(
        help="Image files, folders (searched recursively), or - to read paths from stdin.",
        show_default=False,
        metavar="IMAGE",
    ),
]


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mnist {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, evaluate and serve every classic family of MNIST model."""


def image_paths(items: list[str]) -> list[str]:
    """Command-line image arguments -> paths: `-` reads one path per line from stdin."""
    from mnistcli.data.images import collect_paths

    return collect_paths(items, stdin=sys.stdin)


def input_items(items: list[str]) -> list[str]:
    """Command-line image arguments with each `-` replaced by the paths on stdin (one per line); folders stay
    folders (`mnist predict` expands them, or, for bags, makes each one a bag)."""
    out: list[str] = []
    for item in items:
        if item == "-":
            out.extend(s for s in (line.strip() for line in sys.stdin) if s and s != "-")
        else:
            out.append(item)
    return out


def parse_ints(text: str, option: str, example: str = "1,5") -> tuple[int, ...]:
    """'1,5' -> (1, 5); a clear usage error naming `option` otherwise."""
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected numbers separated by commas, e.g. {example}") from None


def parse_classes(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else parse_ints(text, "--classes", "0,1,2")


def parse_runs(text: str) -> list[str]:
    """'a,b,c' -> ['a', 'b', 'c'] (run references for --from). Raises `UsageError` if none is given."""
    refs = [r.strip() for r in text.split(",") if r.strip()]
    if not refs:
        raise UsageError("--from takes finished runs, comma-separated, e.g. --from cnn-1,cnn-2")
    return refs


def parse_model_args(pairs: list[str] | None) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--arg {pair!r}: expected KEY=VALUE, e.g. width=32")
        if len(value) > MAX_ARG_CHARS:
            raise UsageError(f"--arg {key[:40]}: a value of {len(value):,} characters (at most {MAX_ARG_CHARS:,})")
        try:
            args[key] = json.loads(value)
        except RecursionError:
            raise UsageError(f"--arg {key[:40]}: a value nested too deeply") from None
        except ValueError:  # not JSON (a JSONDecodeError): the text itself
            args[key] = value
    return args


MAX_ARG_CHARS = 1000  # a model argument is a number, a word or a short list; json.loads of more can overflow
