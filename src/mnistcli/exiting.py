"""How a command's process ends: its output flushed, and once torch is loaded, without Python's finalization.

Flushing (`flush`, `write_failed`): a reader of standard output that has left (`| head -1`) is no error, and
what it did not read is dropped; output that cannot be written (a full disk) is one line and exit 1, never a
silent 0 or Python's own "Exception ignored" and exit 120.

Python's finalization after `import torch` (tearing down torch's modules and everything they hold) takes
0.3-0.5 s on a laptop CPU: a fifth of `python -c "import torch"`, and a tenth of a five-second training.
None of it is work of ours: every file mnistcli writes is complete when the command returns (written by an
atomic rename, or through a descriptor with unbuffered writes), and what must happen at exit (a run's claim
released, temporary folders removed, logging flushed) is registered with `atexit`, whose handlers run here
first, as they would at any exit. It is only done when no other non-daemon thread is alive: a thread still
working (a worker pool's relay, say) gets the interpreter's ordinary exit, which waits for it. No torch here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn


def status(code: int | str | None) -> int:
    """The exit status `sys.exit(code)` gives (a string is printed to stderr by the caller and means 1)."""
    return code if isinstance(code, int) else (0 if code is None else 1)


def alone() -> bool:
    """Whether this is the only non-daemon thread alive (the interpreter would exit at once)."""
    main = threading.main_thread()
    return threading.current_thread() is main and all(t is main or t.daemon for t in threading.enumerate())


def flush(code: int | str | None) -> int | str | None:
    """Flush standard output and error at the end of a command; the exit code to end with. A reader that has left
    (`mnist predict ... | head -1`) is no error: what it did not read is dropped. Any other failure to write what
    is still buffered (a full disk under `> file`) is one line on stderr and, for a command that had succeeded,
    exit 1, never a silent 0. Either way the rest goes to /dev/null, so the interpreter's own last flush finds
    nothing to fail on."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()
    except OSError as e:
        discard_stdout()
        with contextlib.suppress(Exception):
            print(f"error: standard output: {e.strerror or e}", file=sys.stderr)
        code = code if status(code) else 1
    except ValueError:  # standard output already closed: nothing is buffered
        pass
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    return code


def write_failed(e: OSError) -> int:
    """A write to standard output or error failed outside any command's own guard (help text, an error message):
    one line if stderr can still take it, the rest of both streams dropped, and the exit status (1)."""
    discard_stdout()
    with contextlib.suppress(Exception):
        print(f"error: standard output: {e.strerror or e}", file=sys.stderr, flush=True)
    _discard(sys.stderr)
    return 1


def discard_stdout() -> None:
    """Drop whatever is still buffered for standard output (its descriptor pointed at /dev/null)."""
    _discard(sys.stdout)


def _discard(stream: object) -> None:
    """Point `stream`'s descriptor at /dev/null: what is still buffered for it goes nowhere, and fails nowhere."""
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())  # type: ignore[attr-defined]
        os.close(devnull)


def leave(code: int | str | None) -> NoReturn:
    """End the process with `code` as `sys.exit` would, without the interpreter's finalization."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()  # what a normal exit runs first
    os._exit(status(flush(code)))
