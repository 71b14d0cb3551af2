"""The one family of domain errors.

Everything the user can get wrong (a bad file, a missing dataset, an unknown model, a corrupt
checkpoint) raises a subclass of `MnistError` whose message is one line naming the thing and the
problem. Only the CLI boundary turns these into a red message and a non-zero exit; library code
lets them propagate. No torch here: the CLI imports this module at start-up.
"""

from __future__ import annotations


class MnistError(Exception):
    """Base class of every error the CLI reports as a one-line message (exit code 1)."""


class FileProblem(MnistError):
    """A problem with one file; the message is `<path>: <problem>`."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class IdxError(FileProblem):
    """An IDX file is malformed: bad magic, unknown type, wrong size, broken gzip."""


class DataError(MnistError):
    """The dataset is missing, cannot be downloaded, or is inconsistent."""


class ImageError(FileProblem):
    """A user image cannot be read or holds no digit."""


class CheckpointError(MnistError):
    """A checkpoint cannot be found, is corrupt, or does not fit the command."""


class UsageError(MnistError):
    """Options that do not make sense together (exit code 2, like Click's usage errors)."""


class ModelError(UsageError):
    """An unknown model name or bad model arguments (so exit code 2), or a duplicate registration."""


class Interrupted(MnistError):
    """The user stopped the work (Ctrl-C): exit code 130, with how to resume where there is a way."""


class PeerFailed(MnistError):
    """Another process of a data-parallel run failed and says why itself: this one stops without a word, with exit code
    `PEER_EXIT`, which only the launcher sees (api/launching.py): it tells this process's failure from the cause."""


PEER_EXIT = 3
