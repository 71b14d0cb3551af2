"""The reference recipe, written from its description: the PyTorch examples' MNIST.

Net: conv 32@3x3, ReLU, conv 64@3x3, ReLU, 2x2 max-pool, dropout 0.25, fc 9216-128, ReLU,
dropout 0.5, fc 128-10, log-softmax. Adadelta lr 1.0 with StepLR gamma 0.7 per epoch, batch 64,
torchvision's MNIST through a DataLoader with ToTensor + Normalize((0.1307,), (0.3081,)), the
test set evaluated after each epoch in batches of 1,000. (The original shuffles only when CUDA
is used; this one always shuffles, which is what the recipe means to do.)

Modes, each printing JSON lines on stdout:
  train ROOT --device D --epochs N --target T --seed S   per epoch: test accuracy and the time since
                                                          the process started (BENCH_T0, epoch secs)
  eval ROOT CHECKPOINT --device D                        the usual test loop over a mnistcli model
  predict CHECKPOINT FILE... --device D                  the usual one-file-at-a-time prediction
"""

from __future__ import annotations

import argparse
import json
import os
import time

T0 = float(os.environ.get("BENCH_T0", time.time()))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def emit(**row: object) -> None:
    print(json.dumps(row), flush=True)


def test_accuracy(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in loader:
            out = model(data.to(device))
            correct += int((out.argmax(dim=1) == target.to(device)).sum())
    return correct / len(loader.dataset)  # type: ignore[arg-type]


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train_set = datasets.MNIST(args.root, train=True, download=False, transform=TRANSFORM)
    test_set = datasets.MNIST(args.root, train=False, download=False, transform=TRANSFORM)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000)
    model = Net().to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for data, target in train_loader:
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            F.nll_loss(model(data), target).backward()
            optimizer.step()
        accuracy = test_accuracy(model, test_loader, device)
        scheduler.step()
        emit(epoch=epoch, test_accuracy=accuracy, seconds=time.time() - T0)
        if accuracy >= args.target:
            break


def load_mnistcli(checkpoint: str, device: torch.device) -> nn.Module:
    from mnistcli import store

    return store.load(store.resolve(checkpoint), device)


def evaluate(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    model = load_mnistcli(args.checkpoint, device)
    # mnistcli models normalise inside, so the usual loader gives them ToTensor() pixels.
    test_set = datasets.MNIST(args.root, train=False, download=False, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(test_set, batch_size=1000)
    start = time.perf_counter()
    accuracy = test_accuracy(model, loader, device)
    seconds = time.perf_counter() - start
    emit(accuracy=accuracy, seconds=seconds, images_per_second=len(test_set) / seconds)


def predict(args: argparse.Namespace) -> None:
    from PIL import Image

    device = torch.device(args.device)
    model = load_mnistcli(args.checkpoint, device)
    to_tensor = transforms.ToTensor()
    with torch.no_grad():
        for path in args.files:
            image = Image.open(path).convert("L").resize((28, 28))
            probs = torch.softmax(model(to_tensor(image).unsqueeze(0).to(device)), dim=1)[0]
            emit(path=path, digit=int(probs.argmax()), confidence=float(probs.max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("train")
    p.add_argument("root")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("eval")
    p.add_argument("root")
    p.add_argument("checkpoint")
    p = sub.add_parser("predict")
    p.add_argument("checkpoint")
    p.add_argument("files", nargs="+")
    for p in sub.choices.values():
        p.add_argument("--device", default="cpu")
    args = parser.parse_args()
    {"train": train, "eval": evaluate, "predict": predict}[args.mode](args)


if __name__ == "__main__":
    main()
