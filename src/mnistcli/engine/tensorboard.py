"""TensorBoard event files for a run (`mnist train --tensorboard`), when the tensorboard package is there.

Scalars: the training loss of every progress report, running accuracy and learning rate; per
epoch the train and validation metrics; at the end the test result. Images: a grid of test
digits. Written to `<run>/tensorboard/`; `tensorboard --logdir <home>/runs` compares runs. A run that
starts over (engine.callbacks.Restart) keeps only its last attempt, as its log does; a run trained
several times (engine.callbacks.BestAttempt) writes its second attempt and later ones into
`tensorboard/attempt-N/`, each a run of its own, and its test result beside the attempt kept.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from mnistcli.errors import UsageError

FOLDER = "tensorboard"


def require() -> None:
    """Raise `UsageError` (before any training) if the tensorboard package is missing or broken."""
    message = "--tensorboard needs the tensorboard package: pip install 'mnistcli[tensorboard]'"
    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError(message)
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        raise UsageError(f"{message} ({e})") from None


class TensorBoardLog:
    """A SummaryWriter fed by the training callbacks."""

    def __init__(self, folder: Path) -> None:
        require()
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=10)  # a live TensorBoard lags 10 s, not 2 min

    def step(self, info: Any) -> None:
        self.writer.add_scalar("train/loss", info.recent_loss, info.step)
        self.writer.add_scalar("train/accuracy", info.accuracy, info.step)
        self.writer.add_scalar("train/lr", info.lr, info.step)

    def epoch(self, info: Any) -> None:
        self.writer.add_scalar("epoch/train_loss", info.train_loss, info.epoch)
        self.writer.add_scalar("epoch/train_accuracy", info.train_accuracy, info.epoch)
        if info.val_accuracy is not None:
            self.writer.add_scalar("epoch/val_loss", info.val_loss, info.epoch)
            self.writer.add_scalar("epoch/val_accuracy", info.val_accuracy, info.epoch)

    def finish(self, test: dict[str, float], images: torch.Tensor, step: int) -> None:
        """The test metrics and a grid of `images` (N, 28, 28) uint8, at the last step."""
        for key, value in test.items():
            self.writer.add_scalar(f"test/{key}", value, step)
        self.writer.add_images("test/examples", images.unsqueeze(1).float().div(255).cpu(), step)

    def start_over(self) -> None:
        """Training began again from step 1: a new event file opens with a session start at step 0, which tells
        TensorBoard (its data server and its Python reader, live or not) to drop every event it read before, so
        the abandoned attempt's curves do not zigzag under the new one at the same steps."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer.close()
        self.writer = SummaryWriter(log_dir=str(self.folder), flush_secs=10, purge_step=0)

    def attempt(self, number: int) -> None:
        """Write from now on as attempt `number` of a run trained several times (engine.callbacks.BestAttempt), in
        a folder of its own (the first attempt's is the run's), so TensorBoard shows each attempt as its own run."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer.close()
        folder = self.folder if number == 1 else self.folder / f"attempt-{number}"
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=10)

    def combined(self) -> None:
        """Write from now on as the combination of the attempts (`--keep mean`), in `attempts-mean/` (a run of its
        own, beside the attempts)."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer.close()
        self.writer = SummaryWriter(log_dir=str(self.folder / "attempts-mean"), flush_secs=10)

    def close(self) -> None:
        self.writer.close()
